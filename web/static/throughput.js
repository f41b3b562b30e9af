// Throughput counts completions per second of their completed_at, not of
// their arrival: the notifier publishes in polls and a reconnect replays
// a backlog at once, so counting arrivals swung a steady 2 jobs/s between
// 0 and 3 and drew a catch-up burst as a peak no worker could reach.

const SECOND = 1000;
const MAX_AHEAD_MS = 60_000;

/**
 * Throughput holds one count per second for the last windowMs. Seconds
 * newer than settleMs are not shown yet: their completions may still be
 * on their way (a poll interval, a late commit).
 */
export class Throughput {
  constructor({ windowMs = 5 * 60 * 1000, settleMs = 1500 } = {}) {
    this.windowMs = windowMs;
    this.settleMs = settleMs;
    // second index → completions that finished in it; bounded by the
    // window (prune), so about 300 entries.
    this.buckets = new Map();
    // From start on the board holds every completion: before it, it
    // knows nothing. Infinity until the first connection.
    this.start = Infinity;
    // While disconnected, the seconds after the drop are unknown until
    // the replay of the next connection fills them.
    this.frozenAt = 0;
  }

  /** coverFrom says the board holds every completion from ms on. */
  coverFrom(ms) {
    if (Number.isFinite(ms)) this.start = Math.min(this.start, Math.ceil(ms / SECOND) * SECOND);
  }

  /** freeze marks the link down at ms (0: live again). */
  freeze(ms) {
    this.frozenAt = ms;
  }

  /**
   * add counts one completion that finished at ms (local clock). One
   * outside the window, or stamped over a minute ahead (a worker's clock
   * gone wrong), is left out, so the buckets stay about as many as the
   * window has seconds.
   */
  add(ms, now = Date.now()) {
    if (!Number.isFinite(ms) || ms < now - this.windowMs - this.settleMs || ms > now + MAX_AHEAD_MS) return;
    const s = Math.floor(ms / SECOND);
    this.buckets.set(s, (this.buckets.get(s) ?? 0) + 1);
  }

  prune(now) {
    const oldest = Math.floor((now - this.windowMs - this.settleMs) / SECOND) - 1;
    for (const s of this.buckets.keys()) if (s < oldest) this.buckets.delete(s);
  }

  /**
   * series returns the settled seconds to draw at now: [{t, v}] with t the
   * start of each second, oldest first, the time the series ends and the
   * time a chart's axis ends (later than the series while disconnected).
   */
  series(now) {
    this.prune(now);
    const axisEnd = Math.floor((now - this.settleMs) / SECOND) * SECOND;
    let end = axisEnd;
    if (this.frozenAt) end = Math.min(end, Math.floor(this.frozenAt / SECOND) * SECOND);
    const from = Math.max(this.start, end - this.windowMs);
    const pts = [];
    for (let t = from; t < end; t += SECOND) pts.push({ t, v: this.buckets.get(t / SECOND) ?? 0 });
    return { pts, end, axisEnd };
  }

  /**
   * summary returns the rate now (the mean of the last five settled
   * seconds, so that a steady rate reads steady), the peak second, the
   * mean and the total over the series.
   */
  summary(now) {
    const { pts, end, axisEnd } = this.series(now);
    const recent = pts.slice(-5);
    const current = recent.length ? recent.reduce((m, p) => m + p.v, 0) / recent.length : 0;
    const total = pts.reduce((m, p) => m + p.v, 0);
    return {
      pts, end, axisEnd, current, total,
      peak: pts.reduce((m, p) => Math.max(m, p.v), 0),
      avg: pts.length ? total / pts.length : 0,
    };
  }
}

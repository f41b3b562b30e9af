// Queue counters, the per-tube table and the throughput sparkline, fed by
// the notifier's stats messages (every second) and by the completions the
// board receives (the stats carry no completed count per tube). The
// sparkline counts completions by their completed_at (throughput.js).

import { Throughput } from './throughput.js';
import { count, cursorAfter, h, schedule } from './util.js';

const STATES = ['ready', 'delayed', 'reserved', 'buried'];
const WINDOW_MS = 5 * 60 * 1000;
const MIN_SPAN_MS = 60 * 1000;
const W = 300;
const H = 60;

/** Stats renders the counters, the tubes table and the sparkline. */
export class Stats {
  constructor({ root = document, onTubes } = {}) {
    this.el = {};
    for (const s of [...STATES, 'completed', 'completed-total']) this.el[s] = root.querySelector(`[data-testid=count-${s}]`);
    this.counters = root.querySelector('[data-testid=counters]');
    this.staleNote = root.getElementById('stale-note');
    // Until the first stats frame the counters show "–", not zeros.
    this.loaded = false;
    // The all-time completed count: the store's total when the board
    // asked, plus the completions after the cursor that total covered.
    this.total = null;
    this.totalCursor = '';
    this.totalExtra = 0;
    // Cursors of the completions that came before the total did.
    this.early = [];
    this.tubesBody = root.getElementById('tubes-body');
    this.tubesEmpty = root.getElementById('tubes-empty');
    this.spark = root.getElementById('sparkline');
    this.sparkLine = this.spark.querySelector('.spark-line');
    this.sparkArea = this.spark.querySelector('.spark-area');
    this.rateNow = root.getElementById('rate-now');
    this.ratePeak = root.getElementById('rate-peak');
    this.rateAvg = root.getElementById('rate-avg');
    this.rateTotal = root.getElementById('rate-total');
    this.spanLabel = root.getElementById('spark-span');
    this.totalSpan = root.getElementById('rate-total-span');
    this.onTubes = onTubes;
    this.tubes = {};
    this.completed = new Map();
    this.completedTotal = 0;
    this.throughput = new Throughput({ windowMs: WINDOW_MS });
    this.tubeNames = '';
    this.tubesAt = 0;
    this.renderCounters = this.renderCounters.bind(this);
    this.renderTubes = this.renderTubes.bind(this);
    this.renderSpark = this.renderSpark.bind(this);
    // Keep the sparkline sliding while no stats arrive (disconnected).
    setInterval(() => schedule(this.renderSpark), 5000);
  }

  /** applyStats takes a stats message. */
  applyStats(msg) {
    this.loaded = true;
    this.setStale(false);
    this.tubes = msg.tubes && typeof msg.tubes === 'object' ? msg.tubes : {};
    // tubes lists only the busiest; totals counts every tube.
    this.totals = msg.totals && typeof msg.totals === 'object' ? msg.totals : null;
    schedule(this.renderCounters);
    schedule(this.renderTubes);
    schedule(this.renderSpark);
  }

  /** addThroughput counts a completion that finished at ms (local clock) in the sparkline. */
  addThroughput(ms) {
    this.throughput.add(ms);
  }

  /** addCompleted counts one completion in tube since the page loaded. */
  addCompleted(tube) {
    this.completed.set(tube, (this.completed.get(tube) ?? 0) + 1);
    this.completedTotal++;
    schedule(this.renderCounters);
    // The table is rebuilt at most twice a second for completions alone.
    if (Date.now() - this.tubesAt > 500) schedule(this.renderTubes);
  }

  /**
   * setStale marks the queue counters as out of date (the notifier is
   * gone); the next stats frame clears it.
   */
  setStale(stale) {
    const v = String(stale || !this.loaded);
    if (this.counters.dataset.stale === v) return;
    this.counters.dataset.stale = v;
    setText(this.staleNote, v === 'true' && this.loaded ? 'The queue counters are stale until the board reconnects.' : '');
  }

  /** setTotal takes the store's completed total and the cursor it covers. */
  setTotal(total, cursor) {
    this.total = total;
    this.totalCursor = cursor ?? '';
    this.totalExtra = this.early.filter((c) => cursorAfter(c, this.totalCursor)).length;
    this.early = [];
    schedule(this.renderCounters);
  }

  /** addToTotal counts a completion (by its cursor) into the all-time total when the total did not cover it. */
  addToTotal(cursor) {
    if (this.total === null) {
      if (this.early.length < 100_000) this.early.push(cursor);
      return;
    }
    if (cursorAfter(cursor, this.totalCursor)) {
      this.totalExtra++;
      schedule(this.renderCounters);
    }
  }

  renderCounters() {
    const totals = { ready: 0, delayed: 0, reserved: 0, buried: 0 };
    for (const t of this.totals ? [this.totals] : Object.values(this.tubes)) {
      for (const s of STATES) totals[s] += Number(t?.[s]) || 0;
    }
    for (const s of STATES) setText(this.el[s], this.loaded ? String(totals[s]) : '–');
    setText(this.el.completed, String(this.completedTotal));
    setText(this.el['completed-total'], this.total === null ? '–' : count(this.total + this.totalExtra));
  }

  renderTubes() {
    this.tubesAt = Date.now();
    const names = new Set([...Object.keys(this.tubes), ...this.completed.keys()]);
    const sorted = [...names].sort((a, b) => (a === 'default' ? -1 : b === 'default' ? 1 : a.localeCompare(b)));
    this.tubesEmpty.hidden = sorted.length > 0;
    const rows = sorted.map((name) => {
      const t = this.tubes[name] ?? {};
      return h('tr', {},
        h('th', { scope: 'row' }, h('a', { class: 'tube-chip', href: `#/tube/${encodeURIComponent(name)}`, title: name, text: name })),
        ...STATES.map((s) => h('td', { class: 'num', 'data-zero': !(Number(t[s]) > 0) },
          Number(t[s]) > 0 ? h('a', { href: `#/jobs?${new URLSearchParams({ state: s, tube: name })}`, 'aria-label': `${t[s]} ${s} in ${name}` }, count(Number(t[s]))) : '0')),
        h('td', { class: 'num c-opt', 'data-zero': !(this.completed.get(name) > 0) }, count(this.completed.get(name) ?? 0)),
        h('td', { class: 'num c-opt', 'data-zero': !(Number(t.watching) > 0) }, count(Number(t.watching) || 0)));
    });
    this.tubesBody.replaceChildren(...rows);
    const key = sorted.join('\n');
    if (key !== this.tubeNames) {
      this.tubeNames = key;
      this.onTubes?.(sorted);
    }
  }

  renderSpark() {
    const now = Date.now();
    const { pts, end, axisEnd, current, peak, avg, total } = this.throughput.summary(now);
    const rate = (v) => (v < 10 && v % 1 ? v.toFixed(1) : count(Math.round(v)));
    setText(this.rateNow, rate(current));
    setText(this.ratePeak, count(peak));
    setText(this.rateAvg, avg < 10 ? avg.toFixed(1) : count(Math.round(avg)));
    setText(this.rateTotal, count(total));
    this.spark.setAttribute('aria-label', pts.length
      ? `Completed jobs per second, by when they finished, over the last 5 minutes or since the board's data starts: now ${rate(current)}, peak ${peak}, average ${avg.toFixed(1)}`
      : 'No throughput data yet');

    const top = niceMax(peak);
    // Until five minutes of samples exist the chart spans what there is
    // (at least a minute), so a fresh board does not draw a sliver.
    const span = Math.min(WINDOW_MS, Math.max(MIN_SPAN_MS, axisEnd - (pts[0]?.t ?? axisEnd)));
    const minutes = Math.round(span / 60_000);
    setText(this.spanLabel, `last ${minutes} min`);
    setText(this.totalSpan, `in ${minutes} min`);
    const x = (t) => (W * (t - (axisEnd - span))) / span;
    const y = (v) => H - 2 - ((H - 6) * v) / top;
    // Each second is drawn at its end, so the line reaches the right edge.
    const seg = pts.length === 1 ? [{ t: pts[0].t, v: pts[0].v }, { t: end, v: pts[0].v }] : pts.map((p) => ({ t: p.t + 1000, v: p.v }));
    let line = '';
    let area = '';
    if (seg.length) {
      line = seg.map((p, i) => `${i ? 'L' : 'M'}${x(p.t).toFixed(1)} ${y(p.v).toFixed(1)}`).join('');
      area = `${line}L${x(seg.at(-1).t).toFixed(1)} ${H}L${x(seg[0].t).toFixed(1)} ${H}Z`;
    }
    this.sparkLine.setAttribute('d', line);
    this.sparkArea.setAttribute('d', area);
  }
}

function niceMax(v) {
  if (v <= 1) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function setText(el, text) {
  if (el && el.textContent !== text) el.textContent = text;
}

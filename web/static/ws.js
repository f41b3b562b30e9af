// The WebSocket to the notifier: connects, reconnects with exponential
// backoff and jitter, asks to replay what was missed (the caller supplies
// the cursor) and drops a connection that has gone silent. The notifier
// sends stats every second, so ten silent seconds mean a dead link.

const BASE_DELAY_MS = 500;
// The cap keeps the board back within about 5 s of the notifier's return,
// however long it was away.
const MAX_DELAY_MS = 4_000;
const CONNECT_TIMEOUT_MS = 10_000;
const SILENCE_MS = 10_000;

/** backoff returns the wait before retry number attempt (1-based): exponential, capped, half of it random. */
export function backoff(attempt) {
  const ceiling = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** Math.min(attempt - 1, 16));
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

/**
 * Connection keeps one WebSocket open to path (relative to the page).
 *
 * Callbacks: since() returns the cursor to replay from, or "" to ask
 * instead for the last completions (when last > 0) or none; token()
 * the API token or ""; onOpen({replayed, last}) runs when a socket opens;
 * onMessage(msg) gets every parsed message; onState(state, {retryAt})
 * reports "connecting", "open" or "closed"; onUnauthorized() is called
 * when the server refuses the token and resolves true once there is a new
 * one to try.
 */
export class Connection {
  constructor({ path = 'ws', since, last = 0, token, onOpen, onMessage, onState, onUnauthorized }) {
    Object.assign(this, { path, since, last, token, onOpen, onMessage, onState, onUnauthorized });
    this.ws = null;
    this.state = 'closed';
    this.attempt = 0;
    this.failedBeforeOpen = 0;
    this.retryTimer = 0;
    this.connectTimer = 0;
    this.silenceTimer = 0;
    this.probing = false;
    this.declined = false;
    window.addEventListener('online', () => {
      if (this.state === 'closed') this.reconnectNow();
    });
  }

  start() {
    this.connect();
  }

  /** send sends msg as JSON and reports whether the socket was open. */
  send(msg) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  /** reconnectNow skips the wait before the next attempt. */
  reconnectNow() {
    if (this.state === 'open' || this.state === 'connecting') return;
    this.declined = false;
    clearTimeout(this.retryTimer);
    this.connect();
  }

  url() {
    const u = new URL(this.path, location.href);
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    const since = this.since?.();
    if (since) u.searchParams.set('since', since);
    else if (this.last > 0) u.searchParams.set('last', String(this.last));
    const t = this.token?.();
    if (t) u.searchParams.set('token', t);
    return u;
  }

  setState(state, detail = {}) {
    this.state = state;
    this.onState?.(state, detail);
  }

  connect() {
    clearTimeout(this.retryTimer);
    this.abandon();
    const url = this.url();
    const last = url.searchParams.has('last');
    const replayed = last || url.searchParams.has('since');
    let ws;
    try {
      ws = new WebSocket(url);
    } catch {
      this.retry(false);
      return;
    }
    this.ws = ws;
    this.setState('connecting');
    let opened = false;
    this.connectTimer = setTimeout(() => this.drop(ws, false), CONNECT_TIMEOUT_MS);

    ws.onopen = () => {
      clearTimeout(this.connectTimer);
      opened = true;
      this.failedBeforeOpen = 0;
      this.setState('open');
      this.watch(ws);
      this.onOpen?.({ replayed, last });
    };
    let first = true;
    ws.onmessage = (e) => {
      this.watch(ws);
      if (first) {
        // Only a connection that works resets the backoff: a server that
        // accepts and then drops us at once must not be hammered.
        first = false;
        this.attempt = 0;
      }
      let msg;
      try {
        msg = JSON.parse(e.data);
      } catch {
        return;
      }
      this.onMessage?.(msg);
    };
    ws.onclose = (e) => {
      if (this.ws !== ws) return;
      this.ws = null;
      clearTimeout(this.connectTimer);
      clearTimeout(this.silenceTimer);
      if (e.code === 4401 || e.code === 4403 || (e.code === 1008 && /token|auth/i.test(e.reason))) {
        this.unauthorized();
        return;
      }
      this.retry(opened);
    };
    // onerror is always followed by onclose, which does the work.
    ws.onerror = () => {};
  }

  watch(ws) {
    clearTimeout(this.silenceTimer);
    this.silenceTimer = setTimeout(() => this.drop(ws, true), SILENCE_MS);
  }

  /** drop abandons ws without waiting for a closing handshake a dead link would never finish. */
  drop(ws, opened) {
    if (this.ws !== ws) return;
    this.abandon(opened ? 'silent' : 'connect timeout');
    this.retry(opened);
  }

  /** abandon forgets the current socket, if any, and closes it without waiting. */
  abandon(reason = 'replaced') {
    const ws = this.ws;
    clearTimeout(this.connectTimer);
    clearTimeout(this.silenceTimer);
    if (!ws) return;
    this.ws = null;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try {
      ws.close(4000, reason);
    } catch {
      // Already closed.
    }
  }

  retry(opened) {
    this.attempt++;
    if (!opened) this.failedBeforeOpen++;
    const wait = backoff(this.attempt);
    this.setState('closed', { retryAt: Date.now() + wait });
    this.retryTimer = setTimeout(() => this.connect(), wait);
    // A socket refused before it opens may be a missing or stale token:
    // browsers hide the HTTP status of a failed upgrade, so ask with a
    // plain request now and then.
    if (!opened && (this.failedBeforeOpen === 1 || this.failedBeforeOpen % 5 === 0)) this.probe();
  }

  async probe() {
    if (this.probing || this.declined || !this.onUnauthorized) return;
    this.probing = true;
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), 3000);
    try {
      const u = this.url();
      u.protocol = location.protocol;
      u.searchParams.delete('since');
      u.searchParams.delete('last');
      const res = await fetch(u, { cache: 'no-store', signal: ctl.signal });
      if (res.status === 401 || res.status === 403) await this.unauthorized();
    } catch {
      // Unreachable: the backoff goes on.
    } finally {
      clearTimeout(timer);
      this.probing = false;
    }
  }

  async unauthorized() {
    clearTimeout(this.retryTimer);
    this.setState('closed', { unauthorized: true });
    const again = await this.onUnauthorized?.();
    if (again) {
      // A new token starts afresh: its first refusal is probed at once.
      this.attempt = 0;
      this.failedBeforeOpen = 0;
      this.connect();
    } else {
      // Declined: keep retrying in case the server stops asking, but do
      // not open the dialog again until the user reconnects by hand.
      this.declined = true;
      this.retry(false);
    }
  }
}

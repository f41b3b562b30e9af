// Small helpers shared by the board's modules: formatting, a bounded map,
// cursor comparison and a once-per-frame render scheduler.

const timeFormat = new Intl.DateTimeFormat(undefined, {
  hour: '2-digit', minute: '2-digit', second: '2-digit', fractionalSecondDigits: 3, hour12: false,
});
const dateTimeFormat = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: 'short', day: 'numeric',
  hour: '2-digit', minute: '2-digit', second: '2-digit', fractionalSecondDigits: 3, hour12: false,
});
const intFormat = new Intl.NumberFormat();

/** Returns "HH:MM:SS.mmm" for a date, an ISO string or milliseconds; "" when unknown. */
export function clock(t) {
  const d = toDate(t);
  return d ? timeFormat.format(d) : '';
}

/** Returns a full local date and time; "" when unknown. */
export function dateTime(t) {
  const d = toDate(t);
  return d ? dateTimeFormat.format(d) : '';
}

/** Returns a Date for a Date, ISO string or milliseconds, or null. */
export function toDate(t) {
  if (t === undefined || t === null || t === '') return null;
  const d = t instanceof Date ? t : new Date(t);
  return Number.isNaN(d.getTime()) || d.getTime() <= 0 ? null : d;
}

/** Formats a count with the locale's grouping. */
export function count(n) {
  return intFormat.format(n);
}

/** Formats a duration in milliseconds: "0.42 ms", "12 ms", "1.5 s", "3 min 4 s". */
export function duration(ms) {
  if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0) return '–';
  if (ms < 1) return `${ms.toFixed(2)} ms`;
  if (ms < 10) return `${ms.toFixed(1)} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
  const m = Math.floor(ms / 60_000);
  return `${m} min ${Math.round((ms % 60_000) / 1000)} s`;
}

/** Formats a byte size. */
export function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

/** Creates an element with attributes and children (strings or nodes). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

/**
 * BoundedMap is a Map that forgets its oldest entries beyond a limit, so
 * that de-duplication state stays small at a thousand completions a second.
 */
export class BoundedMap extends Map {
  constructor(limit) {
    super();
    this.limit = limit;
  }

  set(key, value) {
    if (this.has(key)) this.delete(key);
    super.set(key, value);
    if (this.size > this.limit) {
      // Maps iterate in insertion order: the first keys are the oldest.
      const drop = this.size - this.limit;
      let i = 0;
      for (const k of this.keys()) {
        if (i++ >= drop) break;
        this.delete(k);
      }
    }
    return this;
  }
}

/** Parses a cursor "<unix ms>-<id>" into [ms, id], or null. */
export function parseCursor(c) {
  if (typeof c !== 'string') return null;
  const m = /^(\d+)-(\d+)$/.exec(c);
  return m ? [Number(m[1]), Number(m[2])] : null;
}

/** Reports whether cursor a is after cursor b (a missing b is before everything). */
export function cursorAfter(a, b) {
  const pa = parseCursor(a);
  if (!pa) return false;
  const pb = parseCursor(b);
  if (!pb) return true;
  return pa[0] !== pb[0] ? pa[0] > pb[0] : pa[1] > pb[1];
}

/**
 * Returns a cursor ms milliseconds before cursor c (id 0), or c when it
 * does not parse: reconnecting from there also brings a completion that
 * committed late, out of cursor order, just before a disconnect.
 */
export function cursorBefore(c, ms) {
  const p = parseCursor(c);
  return p ? `${Math.max(0, p[0] - ms)}-0` : c;
}

const dirty = new Set();
let frame = 0;

/**
 * schedule runs fn once in the next animation frame, however many times it
 * is scheduled before then: every DOM update of the board goes through
 * here, so a burst of events costs one layout per frame.
 */
export function schedule(fn) {
  dirty.add(fn);
  if (!frame) frame = requestAnimationFrame(flush);
}

function flush() {
  frame = 0;
  const fns = [...dirty];
  dirty.clear();
  for (const fn of fns) {
    try {
      fn();
    } catch (err) {
      // One broken renderer must not stop the others; report without
      // throwing into the console as an uncaught error.
      console.warn('render failed', err);
    }
  }
}

/** Pretty-prints a payload string when it is JSON, else returns it as is. */
export function prettyPayload(payload) {
  if (typeof payload !== 'string') return JSON.stringify(payload, null, 2);
  try {
    return JSON.stringify(JSON.parse(payload), null, 2);
  } catch {
    return payload;
  }
}

// The job board: wires the notifier's WebSocket to the counters, the feed,
// "My jobs" and the detail view, and the forms to the manager's API.
//
// Every completion carries a cursor; the board remembers the newest and,
// after a reconnect, asks the notifier to replay from a little before it
// (?since=), then drops anything it has already seen by job id. So a
// reconnect leaves neither a hole nor a duplicate. Its first connection
// asks for the last completions (?last=) instead, so a new visitor sees
// what just happened; those that finished before the page loaded are
// marked "earlier" and not counted as completed since load.

import { Api, askToken, errorText, reachability, request, token } from './api.js';
import { Detail } from './detail.js';
import { PayloadEditor } from './editor.js';
import { Feed } from './feed.js';
import { MyJobs } from './myjobs.js';
import { Stats } from './stats.js';
import { BoundedMap, cursorAfter, cursorBefore, h, parseCursor, toDate } from './util.js';
import { Connection } from './ws.js';

const TUBE_RE = /^[A-Za-z0-9+/;.$_()][A-Za-z0-9\-+/;.$_()]{0,199}$/;
const MAX_PRIORITY = 4294967295;
// How many recent completions a fresh board shows (the notifier's ?last=).
const LAST = 50;
// The manager's MAX_JOB_SIZE default (README), used when the notifier's
// /board-config.json does not say the limit (max_job_size).
const DEFAULT_MAX_JOB_SIZE = 65535;
// The page's load time, by the browser's clock.
const LOADED_AT = Math.round(performance.timeOrigin || Date.now());
const $ = (id) => document.getElementById(id);

function toast(text, kind = 'info') {
  const el = h('div', { class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : null }, text);
  $('toasts').append(el);
  setTimeout(() => el.remove(), kind === 'error' ? 8000 : 4000);
}

async function loadConfig() {
  const fallback = { api: '/api', links: [], maxJobSize: 0, clockOffset: 0 };
  try {
    const sent = Date.now();
    const res = await request(new URL('board-config.json', location.href));
    const offset = clockOffset(res.headers?.get('Date'), sent, Date.now());
    if (!res.ok || !res.body || typeof res.body !== 'object') return { ...fallback, clockOffset: offset };
    const max = Number(res.body.max_job_size);
    return {
      api: typeof res.body.api === 'string' && res.body.api ? res.body.api : fallback.api,
      links: Array.isArray(res.body.links) ? res.body.links : [],
      maxJobSize: Number.isSafeInteger(max) && max > 0 ? max : 0,
      clockOffset: offset,
    };
  } catch {
    return fallback;
  }
}

/**
 * clockOffset returns how far the server's clock (from an HTTP Date
 * header, whole seconds) is ahead of the browser's, or 0 when they agree
 * within the header's resolution. completed_at and cursors are the
 * servers' times; the page's load time and "now" are the browser's.
 */
function clockOffset(date, sent, received) {
  const server = Date.parse(date ?? '');
  if (Number.isNaN(server)) return 0;
  const offset = server + 500 - (sent + received) / 2;
  return Math.abs(offset) < 2000 ? 0 : Math.round(offset);
}

function renderLinks(links) {
  const nav = $('links');
  const items = links
    .filter((l) => l && typeof l.name === 'string' && typeof l.url === 'string')
    .filter((l) => {
      try {
        return ['http:', 'https:'].includes(new URL(l.url, location.href).protocol);
      } catch {
        return false;
      }
    })
    .map((l) => h('a', { class: 'link-chip', href: l.url, target: '_blank', rel: 'noopener noreferrer' },
      l.name, h('span', { class: 'ext', 'aria-hidden': 'true' }, '↗'),
      h('span', { class: 'visually-hidden' }, ' (opens in a new tab)')));
  nav.replaceChildren(...items);
  nav.hidden = items.length === 0;
}

async function main() {
  const config = await loadConfig();
  renderLinks(config.links);
  const api = new Api(config.api);
  // Server times (completed_at, cursors) on the browser's clock.
  const local = (ms) => ms - config.clockOffset;

  const detail = new Detail({ api, toast });
  const stats = new Stats({
    onTubes: (names) => $('tube-list').replaceChildren(...names.map((n) => h('option', { value: n }))),
  });
  const feed = new Feed({ onOpen: (id, result) => detail.show(id, { result, focus: true }) });
  const mine = new MyJobs({ onOpen: (id) => detail.show(id, { result: mine.get(id)?.result, focus: true }) });

  // Completed job ids already shown (with their results), and the latest
  // state of recent jobs: a job's events can beat the API's answer to the
  // submit that created it.
  const seen = new BoundedMap(50_000);
  // How far before its newest cursor the board reconnects: the notifier's
  // default NOTIFIER_POLL_LOOKBACK, its allowance for late commits.
  const REWIND_MS = 2000;
  const states = new BoundedMap(5_000);
  let cursor = '';
  let firstOpenAt = 0;
  let everOpened = false;
  // Set while the first completion of a ?last= replay is awaited: it is
  // the oldest, and from its time on the board holds every completion.
  let coverPending = false;

  function onJob(msg) {
    const id = Number(msg.id);
    if (!Number.isSafeInteger(id) || id <= 0) return;
    if (msg.state === 'completed') {
      if (cursorAfter(msg.cursor, cursor)) cursor = msg.cursor;
      const result = msg.result && typeof msg.result === 'object' ? { ...msg.result, _id: msg.result._id ?? id } : null;
      if (seen.has(id)) {
        if (result && seen.get(id).payload === undefined) seen.set(id, result);
        if (result) mine.update(id, 'completed', result);
        return;
      }
      if (coverPending) {
        coverPending = false;
        const p = parseCursor(msg.cursor);
        if (p) stats.throughput.coverFrom(local(p[0]));
      }
      seen.set(id, result ?? { _id: id });
      states.delete(id);
      const doneAt = toDate(result?.completed_at)?.getTime();
      // Finished before the page loaded: shown (the last completions on
      // open) but not counted as completed since load.
      const earlier = doneAt !== undefined && local(doneAt) < LOADED_AT;
      if (doneAt !== undefined) stats.addThroughput(local(doneAt));
      if (!earlier) stats.addCompleted(result?.tube || mine.get(id)?.tube || 'default');
      feed.push(result ?? { _id: id, tube: mine.get(id)?.tube }, { earlier });
      mine.update(id, 'completed', result ?? undefined);
      detail.update(id, 'completed', result);
      return;
    }
    if (seen.has(id)) return; // a late state of a job already completed
    states.set(id, msg.state);
    mine.update(id, msg.state);
    detail.update(id, msg.state);
  }

  const connEl = document.querySelector('[data-testid=connection]');
  const connText = connEl.querySelector('.connection-text');
  const connRetry = connEl.querySelector('.connection-retry');
  const reconnect = $('reconnect');
  let ticker = 0;
  function showConnection(state, { retryAt, unauthorized } = {}) {
    connEl.dataset.state = state;
    clearInterval(ticker);
    connRetry.textContent = '';
    reconnect.hidden = state !== 'closed';
    // The sparkline knows nothing of the seconds after a drop until the
    // next connection's replay fills them.
    if (state === 'open') stats.throughput.freeze(0);
    else if (!stats.throughput.frozenAt && everOpened) stats.throughput.freeze(Date.now());
    if (state === 'open') {
      connText.textContent = 'Live';
    } else if (state === 'connecting') {
      connText.textContent = everOpened ? 'Reconnecting…' : 'Connecting…';
    } else if (unauthorized) {
      connText.textContent = 'Not authorized';
    } else {
      connText.textContent = 'Offline';
      const tick = () => {
        const s = Math.max(0, Math.ceil((retryAt - Date.now()) / 1000));
        connRetry.textContent = `retry in ${s}s`;
      };
      if (retryAt) {
        tick();
        ticker = setInterval(tick, 1000);
      }
    }
    document.title = state === 'open' ? 'Job board' : `(${connText.textContent}) Job board`;
  }

  const conn = new Connection({
    // Before the first completion there is no cursor: replay from when the
    // board first connected, which misses nothing it could have shown.
    // After one, replay from a little before the newest: a completion that
    // committed late, out of cursor order, just before the disconnect
    // comes too, and `seen` drops the repeats (PROTOCOL.md).
    // The first connection asks for the last completions instead.
    since: () => (cursor ? cursorBefore(cursor, REWIND_MS) : firstOpenAt ? `${Math.round(firstOpenAt + config.clockOffset)}-0` : ''),
    last: LAST,
    token,
    onOpen: ({ replayed, last }) => {
      const first = !everOpened;
      everOpened = true;
      if (!firstOpenAt) firstOpenAt = Date.now();
      stats.throughput.coverFrom(firstOpenAt);
      coverPending = last;
      apiReachable();
      if (!replayed) conn.send({ type: 'subscribe', all: true });
      const waiting = mine.waiting();
      if (waiting.length) conn.send({ type: 'subscribe', jobs: waiting });
      if (first) refreshRestored(waiting);
    },
    onMessage: (msg) => {
      switch (msg?.type) {
        case 'job': onJob(msg); break;
        case 'stats': stats.applyStats(msg); break;
        case 'gap':
          $('gap-detail').textContent = msg.error ? ` (${msg.error})` : '';
          $('gap-notice').hidden = false;
          break;
        case 'error': toast(`Notifier: ${msg.error ?? 'error'}`, 'error'); break;
        default: break;
      }
    },
    onState: showConnection,
    onUnauthorized: async () => Boolean(await askToken(Boolean(token()))),
  });
  reconnect.addEventListener('click', () => conn.reconnectNow());

  $('gap-dismiss').addEventListener('click', () => {
    $('gap-notice').hidden = true;
  });

  // Jobs restored from an earlier visit may have moved on while the page
  // was closed: ask once for each (this is not polling; the socket takes
  // over from here).
  async function refreshRestored(ids) {
    for (const id of ids.slice(-20)) {
      try {
        const res = await api.job(id);
        if (!res.ok || !res.body || typeof res.body !== 'object') continue;
        // Not counted as a completion since load, and not put in the feed:
        // it may have completed long before.
        if ('_id' in res.body) {
          if (!seen.has(id)) seen.set(id, res.body);
          mine.update(id, 'completed', res.body);
        } else if (res.body.state) {
          mine.update(id, res.body.state);
        }
      } catch {
        return;
      }
    }
  }

  // Submit form.
  const form = $('submit-form');
  const submit = $('submit');
  const submitError = $('submit-error');
  // cause says what an error is about, so that it goes with its cause:
  // "field" (an input, until it is edited), "unreachable" (until the
  // server answers) or "api" (an answer, until the form is edited).
  function showSubmitError(text, cause = '') {
    submitError.textContent = text;
    if (text && cause) submitError.dataset.cause = cause;
    else delete submitError.dataset.cause;
  }

  // An error that said the API could not be reached goes when the server
  // answers again: the socket opens or any request gets an answer.
  function apiReachable() {
    if (submitError.dataset.cause === 'unreachable') showSubmitError('');
    detail.retry();
  }
  reachability.onReachable = () => queueMicrotask(apiReachable);
  let busy = false;
  const maxNote = config.maxJobSize ? ' (MAX_JOB_SIZE)' : " (MAX_JOB_SIZE's default; this server does not say its own)";
  const editor = new PayloadEditor({
    maxSize: config.maxJobSize || DEFAULT_MAX_JOB_SIZE,
    maxSizeNote: maxNote,
    textarea: $('payload'),
    status: $('payload-status'),
    live: $('payload-live'),
    gotoButton: $('goto-error'),
    formatButton: $('format'),
    onChange: (ok) => {
      submit.disabled = !ok || busy;
    },
  });
  // Editing the form is the answer to its errors: the edited field loses
  // its invalid mark, and the message goes unless the server is unreachable.
  form.addEventListener('input', (e) => {
    if (e.target instanceof HTMLInputElement) e.target.removeAttribute('aria-invalid');
    if (submitError.dataset.cause !== 'unreachable') showSubmitError('');
  });
  $('payload').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      form.requestSubmit();
    }
  });

  function fieldError(input, message) {
    input.setAttribute('aria-invalid', 'true');
    showSubmitError(message, 'field');
    input.focus();
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (busy || !editor.valid) return;
    for (const el of form.querySelectorAll('input')) el.removeAttribute('aria-invalid');
    const tubeIn = $('tube');
    const priIn = $('priority');
    const delayIn = $('delay');
    const tube = tubeIn.value.trim() || 'default';
    const priority = Number(priIn.value || 0);
    const delay = Number(delayIn.value || 0);
    if (!TUBE_RE.test(tube)) return fieldError(tubeIn, 'The tube name may hold letters, digits and -+/;.$_() (up to 200, not starting with -).');
    if (!Number.isInteger(priority) || priority < 0 || priority > MAX_PRIORITY) return fieldError(priIn, `The priority is a whole number from 0 to ${MAX_PRIORITY}.`);
    if (!Number.isInteger(delay) || delay < 0) return fieldError(delayIn, 'The delay is a whole number of seconds, 0 or more.');

    busy = true;
    submit.disabled = true;
    submit.dataset.busy = 'true';
    showSubmitError('');
    const submittedAt = Date.now();
    try {
      const res = await api.submit($('payload').value, { tube, priority, delay });
      const id = Number(res.body?.id);
      if (!res.ok || !Number.isSafeInteger(id)) {
        showSubmitError(`The job was not accepted: ${errorText(res)}`, 'api');
        return;
      }
      mine.add({
        id, tube: res.body.tube ?? tube, state: res.body.state ?? (delay > 0 ? 'delayed' : 'ready'),
        pri: priority, delay, submittedAt,
      });
      conn.send({ type: 'subscribe', jobs: [id] });
      const early = states.get(id);
      if (early) mine.update(id, early);
      const done = seen.get(id);
      if (done) mine.update(id, 'completed', done.payload !== undefined ? done : undefined);
      toast(`Job #${id} submitted`);
    } catch (err) {
      showSubmitError(`Could not reach the API: ${err.message}. This message goes when the board is back online.`, 'unreachable');
    } finally {
      busy = false;
      delete submit.dataset.busy;
      submit.disabled = !editor.valid;
    }
  });

  // Lookup.
  const lookupIn = $('lookup-id');
  $('lookup-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const v = lookupIn.value.trim().replace(/^#/, '');
    if (!/^\d+$/.test(v) || Number(v) <= 0) {
      lookupIn.setAttribute('aria-invalid', 'true');
      detail.el.hidden = false;
      detail.message('Enter a job id: a whole number above 0.', 'invalid-id');
      return;
    }
    lookupIn.removeAttribute('aria-invalid');
    detail.show(Number(v));
  });

  lookupIn.addEventListener('input', () => {
    lookupIn.removeAttribute('aria-invalid');
    if (detail.kind === 'invalid-id') detail.hide();
  });

  // "/" jumps to the lookup field unless the user is typing.
  document.addEventListener('keydown', (e) => {
    if (e.key !== '/' || e.ctrlKey || e.metaKey || e.altKey) return;
    const t = e.target;
    if (t instanceof HTMLElement && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName))) return;
    e.preventDefault();
    lookupIn.focus();
    lookupIn.select();
  });

  conn.start();
}

main();

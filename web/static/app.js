// The job board: wires the notifier's WebSocket to the counters, the feed,
// "My jobs" and the detail view, and the forms to the manager's API.
//
// Every completion carries a cursor; the board remembers the newest and,
// after a reconnect, asks the notifier to replay from a little before it
// (?since=), then drops anything it has already seen by job id. So a
// reconnect leaves neither a hole nor a duplicate. Its first connection
// replays from the page's load time, so "completed since load" is exact
// however many finished before the socket opened; the last completions
// before the load come from the manager (GET /jobs?state=completed), are
// marked "earlier" and are not counted, and so does the all-time total.
//
// The operations views (ops.js) and the job detail are hash routes:
// #/jobs?state=buried&tube=T, #/tube/T, #/job/N.

import { Api, askToken, errorText, reachability, request, token, unreachable } from './api.js';
import { Detail } from './detail.js';
import { PayloadEditor } from './editor.js';
import { Feed } from './feed.js';
import { MyJobs } from './myjobs.js';
import { Ops, confirmAction, parseRoute } from './ops.js';
import { Stats } from './stats.js';
import { BoundedMap, cursorAfter, cursorBefore, h, toDate } from './util.js';
import { Connection } from './ws.js';

const TUBE_RE = /^[A-Za-z0-9+/;.$_()][A-Za-z0-9\-+/;.$_()]{0,199}$/;
const MAX_PRIORITY = 4294967295;
// How many recent completions a fresh board shows (from the manager).
const LAST = 50;
// How often the manager's health is asked.
const HEALTH_MS = 5000;
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

  const lookupIn = $('lookup-id');
  const detail = new Detail({
    api, toast, confirm: confirmAction,
    // Closing the detail leaves its route, and the lookup box forgets the id.
    onHide: (id) => {
      if (lookupIn.value.trim().replace(/^#/, '') === String(id)) lookupIn.value = '';
      if (parseRoute(location.hash).view === 'job') location.hash = '#/';
    },
    onRerun: (id) => {
      location.hash = `#/job/${id}`;
    },
  });
  const ops = new Ops({
    api, toast, confirm: confirmAction,
    subscribe: (ids) => conn.send({ type: 'subscribe', jobs: ids }),
    // My jobs watch their own.
    unsubscribe: (ids) => {
      const drop = ids.filter((id) => !mine.has(id));
      if (drop.length) conn.send({ type: 'unsubscribe', jobs: drop });
    },
  });
  const stats = new Stats({
    onTubes: (names) => $('tube-list').replaceChildren(...names.map((n) => h('option', { value: n }))),
  });
  // Opening a job from a list shows what the board has, under its route.
  const openJob = (id, result) => {
    detail.show(id, { result, focus: true });
    lookupIn.value = String(id);
    if (location.hash !== `#/job/${id}`) history.pushState(null, '', `#/job/${id}`);
  };
  const feed = new Feed({ onOpen: (id, result) => openJob(id, result) });
  const mine = new MyJobs({ onOpen: (id) => openJob(id, mine.get(id)?.result) });

  // Completed job ids already shown (with their results), and the latest
  // state of recent jobs: a job's events can beat the API's answer to the
  // submit that created it.
  const seen = new BoundedMap(50_000);
  // How far before its newest cursor the board reconnects: the notifier's
  // default NOTIFIER_POLL_LOOKBACK, its allowance for late commits.
  const REWIND_MS = 2000;
  const states = new BoundedMap(5_000);
  let cursor = '';
  let everOpened = false;
  // Set on each socket until its first stats frame: "Live" waits for it.
  let statsSeen = false;
  // The page's load time on the servers' clock, as a cursor: the first
  // connection replays from there.
  const loadCursor = `${Math.round(LOADED_AT + config.clockOffset)}-0`;

  function onJob(msg) {
    const id = Number(msg.id);
    if (!Number.isSafeInteger(id) || id <= 0) return;
    if (msg.state === 'completed') {
      if (cursorAfter(msg.cursor, cursor)) cursor = msg.cursor;
      const result = msg.result && typeof msg.result === 'object' ? { ...msg.result, _id: msg.result._id ?? id } : null;
      ops.onJob(msg);
      if (seen.has(id)) {
        if (result && seen.get(id).payload === undefined) seen.set(id, result);
        if (result) mine.update(id, 'completed', result);
        return;
      }
      seen.set(id, result ?? { _id: id });
      stats.addToTotal(msg.cursor);
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
    ops.onJob(msg);
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
    // Counters are stale while no socket feeds them, and until the
    // first stats frame of a new one.
    if (state !== 'open') stats.setStale(true);
    if (state === 'open') {
      // "Live" once the first stats frame has come, not with zeros before.
      connText.textContent = statsSeen ? 'Live' : 'Connected · loading…';
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
    // Before the first completion there is no cursor: replay from the
    // page's load time, so every completion since the load is counted.
    // After one, replay from a little before the newest: a completion that
    // committed late, out of cursor order, just before the disconnect
    // comes too, and `seen` drops the repeats (PROTOCOL.md).
    since: () => (cursor ? cursorBefore(cursor, REWIND_MS) : loadCursor),
    token,
    onOpen: ({ replayed }) => {
      const first = !everOpened;
      everOpened = true;
      statsSeen = false;
      stats.throughput.coverFrom(LOADED_AT);
      apiReachable();
      if (!replayed) conn.send({ type: 'subscribe', all: true });
      const waiting = mine.waiting();
      if (waiting.length) conn.send({ type: 'subscribe', jobs: waiting });
      if (first) {
        refreshRestored(waiting);
        // After the socket, which asks for the token first when one is needed.
        loadEarlier();
      }
    },
    onMessage: (msg) => {
      switch (msg?.type) {
        case 'job': onJob(msg); break;
        case 'stats':
          stats.applyStats(msg);
          if (!statsSeen) {
            statsSeen = true;
            if (conn.state === 'open') showConnection('open');
          }
          break;
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
    if (!earlierLoaded && everOpened) loadEarlier();
  }

  // The last completions before the load, and the all-time total, from
  // the manager: once, and again when a first try could not reach it.
  let earlierLoaded = false;
  let earlierLoading = false;
  async function loadEarlier() {
    if (earlierLoading) return;
    earlierLoading = true;
    try {
      const res = await api.list({ state: 'completed', limit: LAST });
      if (!res.ok || !Array.isArray(res.body?.jobs)) return;
      earlierLoaded = true;
      if (typeof res.body.total === 'number') stats.setTotal(res.body.total, res.body.newest ?? '');
      const earlier = [];
      for (const j of res.body.jobs) {
        const id = Number(j.id);
        const doneAt = toDate(j.updated_at)?.getTime();
        // Those that completed after the load come through the replay.
        if (!Number.isSafeInteger(id) || seen.has(id) || doneAt === undefined || local(doneAt) >= LOADED_AT) continue;
        const r = {
          _id: id, hash: j.hash, payload: j.payload, result: j.result, result_encoding: j.result_encoding,
          tube: j.tube, worker: j.worker, attempts: j.attempts, completed_at: j.updated_at, duration_ms: j.duration_ms,
        };
        seen.set(id, r);
        stats.addThroughput(local(doneAt));
        earlier.push(r);
      }
      if (earlier.length) stats.throughput.coverFrom(local(toDate(earlier.at(-1).completed_at).getTime()));
      feed.appendEarlier(earlier);
    } catch {
      // Unreachable: tried again when the manager answers.
    } finally {
      earlierLoading = false;
    }
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
        // The proxy's 502: the manager is away, and this goes when it is back.
        if (unreachable(res)) showSubmitError(`Could not reach the manager: ${errorText(res)}. This message goes when it is back.`, 'unreachable');
        else showSubmitError(`The job was not accepted: ${errorText(res)}`, 'api');
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

  // Lookup: by id, through the job's route.
  $('lookup-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const v = lookupIn.value.trim().replace(/^#/, '');
    if (!/^\d+$/.test(v) || Number(v) <= 0) {
      lookupIn.setAttribute('aria-invalid', 'true');
      detail.ctl?.abort();
      detail.id = null;
      detail.el.hidden = false;
      detail.message('Enter a job id: a whole number above 0.', 'invalid-id');
      return;
    }
    lookupIn.removeAttribute('aria-invalid');
    if (location.hash === `#/job/${Number(v)}`) detail.show(Number(v));
    else location.hash = `#/job/${Number(v)}`;
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

  // Escape closes the detail, else the operations view; an open dialog
  // handles its own.
  document.addEventListener('keydown', (e) => {
    if (e.key !== 'Escape' || document.querySelector('dialog[open]')) return;
    if (!detail.el.hidden) {
      e.preventDefault();
      detail.hide();
    } else if (!$('ops').hidden) {
      e.preventDefault();
      location.hash = '#/';
    }
  });

  // Routes: what the address bar shows is what is open.
  function route() {
    const r = parseRoute(location.hash);
    if (r.view === 'jobs' || r.view === 'tube') ops.show(r, { focus: true });
    else ops.hide();
    if (r.view === 'job') {
      lookupIn.value = String(r.id);
      if (detail.id !== r.id || detail.el.hidden) detail.show(r.id, { result: seen.get(r.id)?.payload !== undefined ? seen.get(r.id) : undefined, focus: true });
    } else if (!detail.el.hidden && detail.id !== null) {
      const id = detail.id;
      detail.el.hidden = true;
      detail.id = null;
      if (lookupIn.value === String(id)) lookupIn.value = '';
    }
  }
  window.addEventListener('hashchange', route);
  window.addEventListener('popstate', route);
  route();

  // The manager's health, beside the notifier's connection.
  const healthEl = document.querySelector('[data-testid=manager-health]');
  const healthText = healthEl.querySelector('.health-text');
  async function checkHealth() {
    let state = 'down';
    let text = 'API down';
    try {
      const res = await api.health();
      if (res.ok) {
        state = 'ok';
        text = 'API ok';
      } else if (!unreachable(res) && res.body && typeof res.body === 'object' && res.body.checks) {
        state = 'degraded';
        const down = Object.entries(res.body.checks).filter(([, v]) => v !== 'ok').map(([k]) => k);
        text = `API: ${down.join(', ') || 'not ready'} down`;
      }
    } catch {
      // Unreachable: down.
    }
    healthEl.dataset.state = state;
    if (healthText.textContent !== text) healthText.textContent = text;
    if (state !== 'down') apiReachable();
  }
  checkHealth();
  // A hidden tab asks nothing; it asks at once when shown again.
  setInterval(() => document.hidden || checkHealth(), HEALTH_MS);
  document.addEventListener('visibilitychange', () => document.hidden || checkHealth());

  conn.start();
}

main();

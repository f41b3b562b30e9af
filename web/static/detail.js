// The job detail view: beanstalkd's stats for a job still in the queue, or
// the stored result (payload pretty-printed, hash, worker, attempts and
// timings) once it is done. It follows the job live while it is shown.

import { errorText, unreachable } from './api.js';
import { dateTime, duration, h, prettyPayload } from './util.js';

const LABEL = { ready: 'Ready', delayed: 'Delayed', reserved: 'Reserved', buried: 'Buried', completed: 'Completed' };
// What a job still in beanstalkd waits for, by state.
const NOTE = {
  ready: 'Waiting for a worker: the hash appears once one completes it.',
  delayed: 'Delayed: it becomes ready when its delay ends, or now if kicked.',
  reserved: 'A worker is running it: the hash appears when it completes.',
  buried: 'Buried: no worker takes it until it is kicked; delete it to drop it.',
};

/** Detail renders one job into the detail panel. */
export class Detail {
  constructor({ root = document, api, toast, confirm, onHide, onRerun }) {
    this.el = root.getElementById('detail');
    this.api = api;
    this.toast = toast;
    this.confirm = confirm;
    this.onHide = onHide;
    this.onRerun = onRerun;
    this.id = null;
    this.kind = null;
    this.ctl = null;
  }

  /**
   * show displays job id: from result when the board already has it, else
   * from the API.
   */
  async show(id, { result, focus = false } = {}) {
    this.ctl?.abort();
    this.id = id;
    this.el.hidden = false;
    if (result) {
      this.renderResult(result);
    } else {
      this.ctl = new AbortController();
      const signal = this.ctl.signal;
      this.message(`Looking up job #${id}…`, 'loading');
      let res;
      try {
        res = await this.api.job(id, signal);
      } catch (err) {
        if (signal.aborted) return;
        this.message(`Could not reach the API: ${err.message}. The lookup runs again when the board is back online.`, 'unreachable');
        return;
      }
      if (signal.aborted || this.id !== id) return;
      if (unreachable(res)) this.message(`Could not reach the manager: ${errorText(res)}. The lookup runs again when it is back.`, 'unreachable');
      else if (res.status === 404) this.message(`No job #${id}: ${errorText(res)}`, 'missing');
      else if (!res.ok) this.message(`Could not look up job #${id}: ${errorText(res)}`, 'error');
      else if (res.body && typeof res.body === 'object' && '_id' in res.body) this.renderResult(res.body);
      else if (res.body && typeof res.body === 'object' && 'state' in res.body) this.renderStats(res.body);
      else this.message(`Unexpected answer for job #${id}.`, 'error');
    }
    if (focus) {
      this.el.focus({ preventScroll: true });
      this.el.scrollIntoView({ block: 'nearest', behavior: matchMedia('(prefers-reduced-motion: reduce)').matches ? 'auto' : 'smooth' });
    }
  }

  /** update follows the shown job: a new state, or its result once completed. */
  update(id, state, result) {
    if (this.id !== id || this.el.hidden || this.kind === 'result') return;
    if (state === 'completed' && result) {
      this.renderResult(result);
      return;
    }
    if (this.kind === 'stats') {
      const badge = this.el.querySelector('.badge');
      if (badge && LABEL[state] && badge.dataset.state !== state) {
        badge.dataset.state = state;
        badge.textContent = LABEL[state];
        // A reserved job has its TTR left; a ready or buried one no time.
        const gone = Math.floor((Date.now() - this.clock.at) / 1000);
        this.clock.left = state === 'reserved' && typeof this.clock.ttr === 'number' ? this.clock.ttr + gone : null;
        this.tick();
      }
    }
  }

  hide() {
    const was = this.id;
    this.ctl?.abort();
    clearInterval(this.ticker);
    this.el.hidden = true;
    this.id = null;
    this.kind = null;
    if (was !== null) this.onHide?.(was);
  }

  /** retry looks the shown job up again when the API could not be reached: the cause is gone. */
  retry() {
    if (this.kind === 'unreachable' && this.id !== null && !this.el.hidden) this.show(this.id);
  }

  head(id, state) {
    return h('div', { class: 'detail-head' },
      h('h3', {}, `Job #${id}`),
      h('span', { class: 'badge', 'data-state': state }, LABEL[state] ?? state),
      h('button', { type: 'button', class: 'btn btn-ghost btn-small detail-close', onclick: () => this.hide() }, 'Close'));
  }

  message(text, kind) {
    this.kind = kind;
    clearInterval(this.ticker);
    this.el.replaceChildren(h('p', { class: `detail-message detail-${kind}` }, text));
  }

  renderResult(r) {
    this.kind = 'result';
    const copy = h('button', { type: 'button', class: 'btn btn-ghost btn-small', onclick: () => this.copy(r.hash, code) }, 'Copy');
    const code = h('code', { class: 'hash', 'data-testid': 'hash' }, r.hash ?? '');
    const fields = [
      // md5's results have a hash; other handlers' return a result.
      r.hash || r.result === undefined ? ['Hash', h('span', { class: 'hash-line' }, code, r.hash ? copy : null)] : null,
      ['Tube', r.tube ? h('span', { class: 'tube-chip' }, r.tube) : '–'],
      ['Worker', r.worker || '–'],
      ['Attempts', r.attempts ?? '–'],
      ['Started', dateTime(r.started_at) || '–'],
      ['Completed', dateTime(r.completed_at) || '–'],
      ['Run time', duration(r.duration_ms)],
    ].filter(Boolean);
    const result = r.result === undefined ? [] : [
      h('h4', {}, r.result_encoding === 'base64' ? 'Result (base64: the output was not text)' : 'Result'),
      h('pre', { class: 'payload', tabindex: '0', 'aria-label': 'Result', 'data-testid': 'result' },
        h('code', {}, JSON.stringify(r.result, null, 2))),
    ];
    this.el.replaceChildren(
      this.head(r._id, 'completed'),
      fieldList(fields),
      ...result,
      h('h4', {}, 'Payload'),
      h('pre', { class: 'payload', tabindex: '0', 'aria-label': 'Payload' }, h('code', {}, prettyPayload(r.payload))),
      this.actions(r._id, 'completed') ?? '',
    );
  }

  renderStats(s) {
    this.kind = 'stats';
    const sec = (n) => (typeof n === 'number' ? `${n} s` : '–');
    // Age and Time left are beanstalkd's figures at the lookup: they tick
    // on from there, and a live change of state restarts Time left.
    this.clock = {
      at: Date.now(),
      age: typeof s.age === 'number' ? s.age : null,
      left: (s.state === 'delayed' || s.state === 'reserved') && typeof s.timeLeft === 'number' ? s.timeLeft : null,
      ttr: s.ttr,
    };
    this.ageEl = h('dd', { 'data-testid': 'detail-age' });
    this.leftEl = h('dd', { 'data-testid': 'detail-time-left' });
    const row = (k, dd) => h('div', {}, h('dt', {}, k), dd);
    const fields = [
      ['Tube', h('span', { class: 'tube-chip' }, s.tube ?? '–')],
      ['Priority', s.pri ?? '–'],
      ['Delay', sec(s.delay)],
      ['TTR', h('abbr', { title: 'time to run: how long a worker may hold the job before beanstalkd gives it to another' }, sec(s.ttr))],
      ['Reserves', s.reserves ?? '–'],
      ['Timeouts', s.timeouts ?? '–'],
      ['Releases', s.releases ?? '–'],
      ['Buries', s.buries ?? '–'],
      ['Kicks', s.kicks ?? '–'],
    ];
    // File 0 means beanstalkd keeps no binlog (no -b): nothing to say.
    if (s.file > 0) fields.push(['Binlog file', h('span', { title: "the number of beanstalkd's binlog file (-b) that holds the job's put" }, `binlog.${s.file}`)]);
    this.el.replaceChildren(
      this.head(s.id, s.state),
      h('dl', { class: 'fields' },
        row('Age', this.ageEl),
        row('Time left', this.leftEl),
        fields.map(([k, v]) => row(k, h('dd', {}, v)))),
      h('p', { class: 'muted small', 'data-testid': 'detail-note' }, NOTE[s.state] ?? ''),
      ...(s.error ? [h('h4', {}, 'Last error'), h('pre', { class: 'payload ops-error', tabindex: '0', 'aria-label': 'Last error', 'data-testid': 'detail-error' }, s.error)] : []),
      ...(typeof s.payload === 'string' ? [h('h4', {}, 'Payload'), h('pre', { class: 'payload', tabindex: '0', 'aria-label': 'Payload', 'data-testid': 'detail-payload' }, h('code', {}, prettyPayload(s.payload)))] : []),
      this.actions(s.id, s.state) ?? '',
    );
    this.tick();
    clearInterval(this.ticker);
    this.ticker = setInterval(() => this.tick(), 1000);
  }

  /** actions are the buttons for a job in state: Kick, Delete, Run again. */
  actions(id, state) {
    const btn = (label, testid, fn) => h('button', { type: 'button', class: 'btn btn-small', 'data-testid': testid, onclick: fn }, label);
    const list = [];
    if (state === 'buried' || state === 'delayed') list.push(btn('Kick', 'detail-kick', () => this.act(id, 'kick')));
    if (state !== 'reserved' && state !== 'completed') list.push(btn('Delete', 'detail-delete', () => this.act(id, 'delete')));
    if (state === 'completed') list.push(btn('Run again', 'detail-rerun', () => this.act(id, 'rerun')));
    return list.length ? h('div', { class: 'form-actions detail-actions' }, list) : null;
  }

  async act(id, what) {
    if (what === 'delete' && !(await this.confirm(`Delete job #${id}? Its payload is gone for good.`, 'Delete'))) return;
    let res;
    try {
      res = what === 'delete' ? await this.api.remove(id) : await this.api.ready(id);
    } catch (err) {
      this.toast(`Could not reach the API: ${err.message}`, 'error');
      return;
    }
    if (!res.ok) {
      this.toast(`${what === 'rerun' ? 'Run again' : what === 'kick' ? 'Kick' : 'Delete'} of #${id} failed: ${errorText(res)}`, 'error');
      return;
    }
    if (what === 'delete') {
      this.toast(`Job #${id} deleted`);
      this.hide();
    } else if (what === 'rerun') {
      this.toast(`Job #${id} runs again as #${res.body?.id}`);
      this.onRerun?.(Number(res.body?.id));
    } else {
      this.toast(`Job #${id} kicked`);
      this.show(id);
    }
  }

  /** tick shows Age and Time left as of now. */
  tick() {
    if (this.kind !== 'stats' || this.el.hidden) {
      clearInterval(this.ticker);
      return;
    }
    const c = this.clock;
    const gone = Math.floor((Date.now() - c.at) / 1000);
    const age = c.age === null ? '–' : `${c.age + gone} s`;
    const left = c.left === null ? '–' : `${Math.max(0, c.left - gone)} s`;
    if (this.ageEl.textContent !== age) this.ageEl.textContent = age;
    if (this.leftEl.textContent !== left) this.leftEl.textContent = left;
  }

  async copy(text, code) {
    try {
      await navigator.clipboard.writeText(text);
      this.toast('Hash copied');
    } catch {
      // No clipboard access (plain http): select the text for Ctrl+C.
      const range = document.createRange();
      range.selectNodeContents(code);
      const sel = getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      this.toast('Hash selected: press Ctrl+C to copy');
    }
  }
}

function fieldList(fields) {
  return h('dl', { class: 'fields' }, fields.map(([k, v]) => h('div', {}, h('dt', {}, k), h('dd', {}, v))));
}

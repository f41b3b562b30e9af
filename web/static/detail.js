// The job detail view: beanstalkd's stats for a job still in the queue, or
// the stored result (payload pretty-printed, hash, worker, attempts and
// timings) once it is done. It follows the job live while it is shown.

import { errorText } from './api.js';
import { dateTime, duration, h, prettyPayload } from './util.js';

const LABEL = { ready: 'Ready', delayed: 'Delayed', reserved: 'Reserved', buried: 'Buried', completed: 'Completed' };

/** Detail renders one job into the detail panel. */
export class Detail {
  constructor({ root = document, api, toast }) {
    this.el = root.getElementById('detail');
    this.api = api;
    this.toast = toast;
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
        this.message(`Could not reach the API: ${err.message}`, 'error');
        return;
      }
      if (signal.aborted || this.id !== id) return;
      if (res.status === 404) this.message(`No job #${id}: ${errorText(res)}`, 'missing');
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
      if (badge && LABEL[state]) {
        badge.dataset.state = state;
        badge.textContent = LABEL[state];
      }
    }
  }

  hide() {
    this.ctl?.abort();
    this.el.hidden = true;
    this.id = null;
  }

  head(id, state) {
    return h('div', { class: 'detail-head' },
      h('h3', {}, `Job #${id}`),
      h('span', { class: 'badge', 'data-state': state }, LABEL[state] ?? state),
      h('button', { type: 'button', class: 'btn btn-ghost btn-small detail-close', onclick: () => this.hide() }, 'Close'));
  }

  message(text, kind) {
    this.kind = kind;
    this.el.replaceChildren(h('p', { class: `detail-message detail-${kind}` }, text));
  }

  renderResult(r) {
    this.kind = 'result';
    const copy = h('button', { type: 'button', class: 'btn btn-ghost btn-small', onclick: () => this.copy(r.hash, code) }, 'Copy');
    const code = h('code', { class: 'hash', 'data-testid': 'hash' }, r.hash ?? '');
    const fields = [
      ['Hash', h('span', { class: 'hash-line' }, code, r.hash ? copy : null)],
      ['Tube', r.tube ? h('span', { class: 'tube-chip' }, r.tube) : '–'],
      ['Worker', r.worker || '–'],
      ['Attempts', r.attempts ?? '–'],
      ['Started', dateTime(r.started_at) || '–'],
      ['Completed', dateTime(r.completed_at) || '–'],
      ['Run time', duration(r.duration_ms)],
    ];
    this.el.replaceChildren(
      this.head(r._id, 'completed'),
      fieldList(fields),
      h('h4', {}, 'Payload'),
      h('pre', { class: 'payload', tabindex: '0', 'aria-label': 'Payload' }, h('code', {}, prettyPayload(r.payload))),
    );
  }

  renderStats(s) {
    this.kind = 'stats';
    const sec = (n) => (typeof n === 'number' ? `${n} s` : '–');
    this.el.replaceChildren(
      this.head(s.id, s.state),
      fieldList([
        ['Tube', h('span', { class: 'tube-chip' }, s.tube ?? '–')],
        ['Priority', s.pri ?? '–'],
        ['Age', sec(s.age)],
        ['Delay', sec(s.delay)],
        ['TTR', sec(s.ttr)],
        ['Time left', sec(s.timeLeft)],
        ['Reserves', s.reserves ?? '–'],
        ['Timeouts', s.timeouts ?? '–'],
        ['Releases', s.releases ?? '–'],
        ['Buries', s.buries ?? '–'],
        ['Kicks', s.kicks ?? '–'],
        ['Binlog file', s.file ?? '–'],
      ]),
      h('p', { class: 'muted small' }, 'Still in the queue: the payload and hash appear when a worker completes it.'),
    );
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

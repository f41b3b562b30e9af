// "My jobs": the jobs submitted from this tab, each moving from ready (or
// delayed) to reserved to completed as the notifier reports it, with its
// timings. Kept in sessionStorage so a reload does not lose them.

import { clock, duration, h, schedule, toDate } from './util.js';

const STORE_KEY = 'jobboard.myJobs';
const MAX_JOBS = 50;
const LABEL = { ready: 'Ready', delayed: 'Delayed', reserved: 'Reserved', buried: 'Buried', completed: 'Completed' };

/** MyJobs holds and renders the jobs submitted from this tab. */
export class MyJobs {
  constructor({ root = document, onOpen }) {
    this.list = root.getElementById('my-jobs');
    this.empty = root.getElementById('mine-empty');
    this.live = root.getElementById('mine-live');
    this.clear = root.getElementById('clear-mine');
    this.onOpen = onOpen;
    this.jobs = new Map();
    this.els = new Map();
    this.dirty = new Set();
    this.render = this.render.bind(this);
    this.list.addEventListener('click', (e) => {
      const b = e.target.closest('.job-link');
      if (b) this.onOpen?.(Number(b.closest('li').dataset.jobId));
    });
    this.clear.addEventListener('click', () => this.clearCompleted());
    this.restore();
  }

  has(id) {
    return this.jobs.has(id);
  }

  get(id) {
    return this.jobs.get(id);
  }

  /** waiting returns the ids of jobs that have not completed. */
  waiting() {
    return [...this.jobs.values()].filter((j) => j.state !== 'completed').map((j) => j.id);
  }

  /** add records a job the manager accepted. */
  add(job) {
    this.jobs.set(job.id, { state: 'ready', ...job });
    while (this.jobs.size > MAX_JOBS) {
      const oldest = this.jobs.keys().next().value;
      this.jobs.delete(oldest);
      this.els.get(oldest)?.remove();
      this.els.delete(oldest);
    }
    this.touch(job.id);
    this.announce(`Job ${job.id} submitted to tube ${job.tube}, ${job.state}.`);
  }

  /**
   * update moves job id to state (with its result when completed). A
   * completed job stays completed; the other states follow beanstalkd,
   * which can release a reserved job back to ready.
   */
  update(id, state, result) {
    const j = this.jobs.get(id);
    if (!j || !LABEL[state]) return;
    if (j.state === 'completed' && (state !== 'completed' || j.result)) return;
    const now = Date.now();
    if (state === 'reserved' && !j.reservedAt) j.reservedAt = now;
    if (state === 'completed') {
      j.doneAt ??= now;
      if (result) j.result = result;
    }
    const changed = j.state !== state;
    j.state = state;
    this.touch(id);
    if (changed) {
      const total = this.total(j);
      this.announce(state === 'completed' && total !== undefined
        ? `Job ${id} completed in ${duration(total)}.`
        : `Job ${id} is ${state}.`);
    }
  }

  /** total returns the time from submit to completion in ms, if known. */
  total(j) {
    const done = toDate(j.result?.completed_at)?.getTime();
    if (done && done >= j.submittedAt) return done - j.submittedAt;
    return j.doneAt ? j.doneAt - j.submittedAt : undefined;
  }

  clearCompleted() {
    for (const [id, j] of this.jobs) {
      if (j.state !== 'completed') continue;
      this.jobs.delete(id);
      this.els.get(id)?.remove();
      this.els.delete(id);
    }
    this.save();
    schedule(this.render);
  }

  announce(text) {
    this.live.textContent = text;
  }

  touch(id) {
    this.dirty.add(id);
    this.save();
    schedule(this.render);
  }

  render() {
    for (const id of this.dirty) {
      const j = this.jobs.get(id);
      if (!j) continue;
      let el = this.els.get(id);
      if (!el) {
        el = h('li', { class: 'job', 'data-testid': 'job-row', 'data-job-id': id });
        this.els.set(id, el);
        this.list.prepend(el);
      }
      // Rebuilding the item must not lose the keyboard focus.
      const hadFocus = el.contains(document.activeElement);
      this.fill(el, j);
      if (hadFocus) el.querySelector('.job-link').focus();
    }
    this.dirty.clear();
    this.empty.hidden = this.jobs.size > 0;
    this.clear.hidden = ![...this.jobs.values()].some((j) => j.state === 'completed');
  }

  fill(el, j) {
    el.dataset.state = j.state;
    const r = j.result;
    const steps = j.delay > 0 || j.state === 'delayed' ? ['delayed', 'ready', 'reserved', 'completed'] : ['ready', 'reserved', 'completed'];
    if (j.state === 'buried') steps.splice(-1, 1, 'buried');
    const at = steps.indexOf(j.state);

    const started = toDate(r?.started_at)?.getTime();
    const waited = started && started >= j.submittedAt ? started - j.submittedAt
      : j.reservedAt ? j.reservedAt - j.submittedAt : undefined;
    const timings = [
      ['Submitted', clock(j.submittedAt)],
      ['Waited', waited === undefined ? '–' : duration(waited)],
      ['Ran', r ? duration(r.duration_ms) : '–'],
      ['Total', j.state === 'completed' ? duration(this.total(j)) : '–'],
    ];

    // replaceChildren, unlike h, would turn a null into the text "null".
    el.replaceChildren(...[
      h('div', { class: 'job-top' },
        h('button', { type: 'button', class: 'job-link', 'aria-label': `Job ${j.id}, details` }, `#${j.id}`),
        h('span', { class: 'tube-chip', title: 'Tube' }, j.tube),
        j.pri !== undefined ? h('span', { class: 'muted small' }, `pri ${j.pri}`) : null,
        h('span', { class: 'badge', 'data-state': j.state }, LABEL[j.state])),
      h('ol', { class: 'steps', 'aria-label': `Progress: ${LABEL[j.state]}` },
        steps.map((s, i) => h('li', {
          'data-step': i < at ? 'done' : i === at ? 'current' : 'todo',
          'data-state': s,
          'aria-current': i === at ? 'step' : null,
        }, LABEL[s]))),
      h('dl', { class: 'timings' },
        timings.map(([k, v]) => h('div', {}, h('dt', {}, k), h('dd', {}, v)))),
      r?.hash ? h('p', { class: 'job-hash' },
        h('span', { class: 'muted' }, 'hash '),
        h('code', { 'data-testid': 'hash', title: r.hash }, r.hash),
        r.worker ? h('span', { class: 'muted small' }, ` · ${r.worker}${r.attempts > 1 ? ` · ${r.attempts} attempts` : ''}`) : null) : null,
    ].filter(Boolean));
  }

  save() {
    try {
      sessionStorage.setItem(STORE_KEY, JSON.stringify([...this.jobs.values()]));
    } catch {
      // Storage full or disabled: the list still works for this page.
    }
  }

  restore() {
    let saved = [];
    try {
      saved = JSON.parse(sessionStorage.getItem(STORE_KEY) ?? '[]');
    } catch {
      saved = [];
    }
    if (!Array.isArray(saved)) return;
    for (const j of saved.slice(-MAX_JOBS)) {
      if (!Number.isSafeInteger(j?.id) || !LABEL[j.state]) continue;
      this.jobs.set(j.id, j);
      this.dirty.add(j.id);
    }
    schedule(this.render);
  }
}

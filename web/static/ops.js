// The operations views: jobs listed by state (GET /jobs) with per-row
// Kick / Delete / Run again, and a tube's page (GET /tubes/T) with Kick
// all and Pause / Resume. Each is a hash route (#/jobs?state=buried&tube=T,
// #/tube/T), so it can be shared as a link and back/forward work. Rows
// follow their jobs live: the ids shown are subscribed on the WebSocket.

import { errorText, unreachable } from './api.js';
import { dateTime, h, prettyPayload } from './util.js';

/** STATES are the lists, in the order of the tabs. */
export const STATES = ['buried', 'failed', 'ready', 'delayed', 'reserved', 'completed'];
const LABEL = {
  buried: 'Buried', failed: 'Failed (retrying)', ready: 'Ready', delayed: 'Delayed', reserved: 'Reserved',
  completed: 'Completed', kicked: 'Kicked',
};
const PAUSES = [['1m', '1 minute'], ['10m', '10 minutes'], ['1h', '1 hour'], ['24h', '1 day']];

/** jobsHash is the route of a list. */
export function jobsHash(state, tube = '', q = '') {
  const p = new URLSearchParams({ state });
  if (tube) p.set('tube', tube);
  if (q) p.set('q', q);
  return `#/jobs?${p}`;
}

/** tubeHash is the route of a tube's page. */
export function tubeHash(tube) {
  return `#/tube/${encodeURIComponent(tube)}`;
}

/**
 * parseRoute reads a location hash: {view: 'home'}, {view: 'jobs', state,
 * tube, q}, {view: 'job', id} or {view: 'tube', tube}.
 */
export function parseRoute(hash) {
  const raw = String(hash || '').replace(/^#/, '');
  const [path, query = ''] = raw.split('?');
  const q = new URLSearchParams(query);
  if (path === '/jobs') {
    const state = STATES.includes(q.get('state')) ? q.get('state') : 'buried';
    return { view: 'jobs', state, tube: q.get('tube') ?? '', q: q.get('q') ?? '' };
  }
  let m = /^\/job\/(\d+)\/?$/.exec(path);
  if (m && Number(m[1]) > 0) return { view: 'job', id: Number(m[1]) };
  m = /^\/tube\/(.+)$/.exec(path);
  if (m) {
    try {
      return { view: 'tube', tube: decodeURIComponent(m[1]) };
    } catch {
      return { view: 'home' };
    }
  }
  return { view: 'home' };
}

/** Ops renders the operations views into the #ops card. */
export class Ops {
  constructor({ root = document, api, toast, confirm, subscribe, unsubscribe }) {
    this.card = root.getElementById('ops');
    this.heading = root.getElementById('ops-heading');
    this.body = root.getElementById('ops-body');
    Object.assign(this, { api, toast, confirm, unsubscribe });
    // The ids this view watches, let go when it closes: the notifier
    // bounds what one client may watch.
    this.watched = new Set();
    this.subscribe = (ids) => {
      const fresh = ids.filter((id) => !this.watched.has(id));
      for (const id of fresh) this.watched.add(id);
      if (fresh.length) subscribe?.(fresh);
    };
    this.route = null;
    this.ctl = null;
    this.rows = new Map(); // job id -> row element
    this.reruns = new Map(); // new job id -> note element
    this.filter = '';
  }

  /** show renders route (a jobs or tube view); hide() for anything else. */
  show(route, { focus = false } = {}) {
    this.ctl?.abort();
    this.ctl = new AbortController();
    this.route = route;
    this.release();
    this.rows.clear();
    this.reruns.clear();
    this.card.hidden = false;
    if (route.view === 'jobs') this.renderJobs(route, this.ctl.signal);
    else this.renderTube(route.tube, this.ctl.signal);
    if (focus) this.card.focus({ preventScroll: true });
    this.card.scrollIntoView({ block: 'start' });
  }

  hide() {
    this.ctl?.abort();
    this.release();
    this.route = null;
    this.card.hidden = true;
    this.body.replaceChildren();
  }

  release() {
    if (this.watched.size) this.unsubscribe?.([...this.watched]);
    this.watched.clear();
  }

  /** reload shows the current view again. */
  reload() {
    if (this.route) this.show(this.route);
  }

  /** onJob follows the listed jobs (and the reruns) live. */
  onJob(msg) {
    const id = Number(msg.id);
    const row = this.rows.get(id);
    if (row && msg.state) setRowState(row, msg.state);
    const note = this.reruns.get(id);
    if (note && msg.state) note.querySelector('.badge').dataset.state = note.querySelector('.badge').textContent = msg.state;
  }

  message(text, kind = 'info') {
    return h('p', { class: kind === 'error' ? 'ops-error-box' : 'ops-summary', role: kind === 'error' ? 'alert' : null, 'data-testid': `ops-${kind}` }, text);
  }

  async renderJobs({ state, tube, q }, signal) {
    this.heading.textContent = `${LABEL[state]} jobs${tube ? ` in ${tube}` : ''}`;
    this.filter = q;
    const tabs = h('ul', { class: 'ops-tabs', 'aria-label': 'Job states' },
      STATES.map((s) => h('li', {}, h('a', { href: jobsHash(s, tube, q), 'aria-current': s === state ? 'page' : null, 'data-testid': `tab-${s}` }, LABEL[s]))));
    const tubeIn = h('input', { id: 'ops-tube', value: tube, list: 'tube-list', placeholder: 'All tubes', autocomplete: 'off', spellcheck: 'false', 'data-testid': 'ops-tube' });
    const searchIn = h('input', { id: 'ops-search', type: 'search', value: q, placeholder: 'id, tube, payload or error', autocomplete: 'off', 'data-testid': 'ops-search' });
    const tools = h('form', { class: 'ops-tools', role: 'search', 'aria-label': 'Filter the list' },
      h('div', { class: 'field' }, h('label', { for: 'ops-tube' }, 'Tube'), tubeIn),
      h('div', { class: 'field' }, h('label', { for: 'ops-search' }, 'Search the listed jobs'), searchIn),
      h('button', { type: 'submit', class: 'btn btn-small' }, 'Apply'));
    tools.addEventListener('submit', (e) => {
      e.preventDefault();
      location.hash = jobsHash(state, tubeIn.value.trim(), searchIn.value.trim());
    });
    searchIn.addEventListener('input', () => {
      this.filter = searchIn.value.trim();
      this.applyFilter();
      history.replaceState(null, '', jobsHash(state, tube, this.filter));
    });
    const actions = h('div', { class: 'ops-tools' },
      h('button', { type: 'button', class: 'btn btn-small', 'data-testid': 'ops-refresh', onclick: () => this.reload() }, 'Refresh'));
    if (tube) {
      actions.append(h('a', { class: 'btn btn-small', href: tubeHash(tube), 'data-testid': 'ops-tube-link' }, `Tube ${tube}: stats, pause`));
      if (state === 'buried' || state === 'delayed') {
        actions.append(h('button', { type: 'button', class: 'btn btn-small', 'data-testid': 'kick-all', onclick: () => this.kickAll(tube, state) }, 'Kick all'));
      }
    }
    const summary = h('div', { 'aria-live': 'polite' });
    const list = h('ol', { class: 'ops-list', 'data-testid': 'ops-list', 'aria-label': `${LABEL[state]} jobs` });
    const more = h('div', { class: 'ops-more' });
    this.list = list;
    this.body.replaceChildren(tabs, tools, actions, summary, list, more);
    summary.replaceChildren(this.message('Loading…'));
    await this.page({ state, tube }, '', { summary, list, more }, signal);
  }

  async page({ state, tube }, after, els, signal) {
    let res;
    try {
      res = await this.api.list({ state, tube, after }, signal);
    } catch (err) {
      if (!signal.aborted) els.summary.replaceChildren(this.message(`Could not reach the API: ${err.message}`, 'error'));
      return;
    }
    if (signal.aborted) return;
    if (!res.ok) {
      els.summary.replaceChildren(this.message(`Could not list the jobs: ${errorText(res)}`, 'error'));
      return;
    }
    const jobs = Array.isArray(res.body?.jobs) ? res.body.jobs : [];
    for (const j of jobs) els.list.append(this.row(j));
    this.subscribe?.(jobs.map((j) => j.id));
    const shown = els.list.children.length;
    const parts = [];
    if (typeof res.body.count === 'number') parts.push(`${res.body.count} ${state} in beanstalkd${tube ? ` in ${tube}` : ''}`);
    if (typeof res.body.total === 'number') parts.push(`${res.body.total} completed in all`);
    if (['ready', 'delayed'].includes(state)) parts.push('beanstalkd shows only the next one');
    if (state === 'reserved') parts.push('beanstalkd lists no reserved jobs; the workers are running them');
    parts.push(shown ? `${shown} listed, newest first` : 'none listed');
    els.summary.replaceChildren(this.message(parts.join(' · ')));
    els.more.replaceChildren();
    if (res.body.next) {
      els.more.append(h('button', {
        type: 'button', class: 'btn btn-small', 'data-testid': 'load-more',
        onclick: () => this.page({ state, tube }, res.body.next, els, signal),
      }, 'Load more'));
    }
    this.applyFilter();
  }

  applyFilter() {
    const q = this.filter.toLowerCase();
    for (const row of this.list?.children ?? []) {
      row.hidden = Boolean(q) && !row.dataset.search.includes(q);
    }
  }

  row(j) {
    const id = Number(j.id);
    const row = h('li', { class: 'ops-row', 'data-testid': 'ops-row', 'data-job-id': String(id), 'data-state': j.state });
    row.dataset.search = [`#${id}`, j.tube, j.payload, j.error].join('\n').toLowerCase();
    const badge = h('span', { class: 'badge', 'data-state': j.state }, LABEL[j.state] ?? j.state);
    const meta = [j.attempts ? `${j.attempts} attempt${j.attempts > 1 ? 's' : ''}` : '', j.worker, dateTime(j.updated_at)].filter(Boolean).join(' · ');
    const actions = h('span', { class: 'actions' });
    row.append(
      h('div', { class: 'ops-row-head' },
        h('a', { href: `#/job/${id}`, class: 'job-link', 'aria-label': `Job ${id}, details` }, `#${id}`),
        badge,
        h('a', { class: 'tube-chip', href: tubeHash(j.tube || 'default') }, j.tube || 'default'),
        h('span', { class: 'meta' }, meta),
        actions),
      j.error ? h('p', { class: 'ops-error', 'data-testid': 'ops-error' }, j.error) : null,
      h('pre', { class: 'payload', tabindex: '0', 'aria-label': `Payload of job ${id}`, 'data-testid': 'ops-payload' }, h('code', {}, prettyPayload(j.payload ?? ''))),
    );
    this.rows.set(id, row);
    this.renderActions(row, id, j.state);
    return row;
  }

  renderActions(row, id, state) {
    const actions = row.querySelector('.actions');
    const btn = (label, testid, fn) => h('button', { type: 'button', class: 'btn btn-small', 'data-testid': testid, onclick: fn }, label);
    const list = [];
    if (['buried', 'failed', 'delayed', 'kicked'].includes(state)) list.push(btn('Kick', 'row-kick', () => this.kick(row, id)));
    if (['buried', 'failed', 'delayed', 'ready', 'kicked'].includes(state)) list.push(btn('Delete', 'row-delete', () => this.remove(row, id)));
    if (state === 'completed') list.push(btn('Run again', 'row-rerun', () => this.rerun(row, id)));
    actions.replaceChildren(...list);
  }

  note(row, ...content) {
    row.querySelector('.ops-note')?.remove();
    const p = h('p', { class: 'ops-note', role: 'status', 'data-testid': 'ops-note' }, ...content);
    row.append(p);
    return p;
  }

  async act(row, what, call) {
    for (const b of row.querySelectorAll('button')) b.disabled = true;
    let res;
    try {
      res = await call();
    } catch (err) {
      this.note(row, `Could not reach the API: ${err.message}`);
      return null;
    } finally {
      for (const b of row.querySelectorAll('button')) b.disabled = false;
    }
    if (!res.ok) {
      this.note(row, `${what} failed: ${errorText(res)}`);
      if (!unreachable(res)) this.toast(`${what} failed: ${errorText(res)}`, 'error');
      return null;
    }
    return res;
  }

  async kick(row, id) {
    const res = await this.act(row, `Kick #${id}`, () => this.api.ready(id));
    if (!res) return;
    setRowState(row, res.body?.state ?? 'ready');
    this.renderActions(row, id, res.body?.state ?? 'ready');
    this.note(row, `Kicked: job #${id} is now ${res.body?.state ?? 'ready'}.`);
    this.subscribe?.([id]);
    this.toast(`Job #${id} kicked`);
  }

  async remove(row, id) {
    if (!(await this.confirm(`Delete job #${id}? Its payload is gone for good.`, 'Delete'))) return;
    const res = await this.act(row, `Delete #${id}`, () => this.api.remove(id));
    if (!res) return;
    this.rows.delete(id);
    row.remove();
    this.toast(`Job #${id} deleted`);
  }

  async rerun(row, id) {
    const res = await this.act(row, `Run #${id} again`, () => this.api.ready(id));
    if (!res) return;
    const next = Number(res.body?.id);
    const badge = h('span', { class: 'badge', 'data-state': res.body?.state ?? 'ready' }, res.body?.state ?? 'ready');
    const note = this.note(row, 'Running again as ', h('a', { href: `#/job/${next}`, 'data-testid': 'rerun-link' }, `#${next}`), ' ', badge);
    this.reruns.set(next, note);
    this.subscribe?.([next]);
    this.toast(`Job #${id} runs again as #${next}`);
  }

  async kickAll(tube, state) {
    if (!(await this.confirm(`Kick every ${state} job of tube ${tube} back to ready?`, 'Kick all'))) return;
    let res;
    try {
      res = await this.api.changeTube(tube, { kick: 100000 });
    } catch (err) {
      this.toast(`Could not reach the API: ${err.message}`, 'error');
      return;
    }
    if (!res.ok) {
      this.toast(`Kick all failed: ${errorText(res)}`, 'error');
      return;
    }
    this.toast(`Kicked ${res.body?.kicked ?? 0} job${res.body?.kicked === 1 ? '' : 's'} of ${tube}`);
    this.reload();
  }

  async renderTube(tube, signal) {
    this.heading.textContent = `Tube ${tube}`;
    this.body.replaceChildren(this.message('Loading…'));
    let res;
    try {
      res = await this.api.tube(tube, signal);
    } catch (err) {
      if (!signal.aborted) this.body.replaceChildren(this.message(`Could not reach the API: ${err.message}`, 'error'));
      return;
    }
    if (signal.aborted) return;
    if (!res.ok) {
      this.body.replaceChildren(this.message(res.status === 404 ? `No tube ${tube}: ${errorText(res)}` : `Could not read tube ${tube}: ${errorText(res)}`, 'error'));
      return;
    }
    const t = res.body;
    const paused = t.pauseTimeLeft > 0;
    const row = (k, v, testid) => h('div', {}, h('dt', {}, k), h('dd', { 'data-testid': testid }, v));
    const fields = h('dl', { class: 'fields' },
      row('Ready', t.currentJobsReady, 'tube-ready'),
      row('Delayed', t.currentJobsDelayed, 'tube-delayed'),
      row('Reserved', t.currentJobsReserved, 'tube-reserved'),
      row('Buried', t.currentJobsBuried, 'tube-buried'),
      row('Total jobs', t.totalJobs),
      row('Watching', t.currentWatching),
      row('Paused', paused ? `yes, ${t.pauseTimeLeft} s of ${t.pause} s left` : 'no', 'tube-paused'));
    const links = h('ul', { class: 'ops-tabs', 'aria-label': `Lists of tube ${tube}` },
      STATES.map((s) => h('li', {}, h('a', { href: jobsHash(s, tube), 'data-testid': `tube-list-${s}` }, LABEL[s]))));
    const pauseFor = h('select', { id: 'pause-for', 'data-testid': 'pause-for' }, PAUSES.map(([v, l]) => h('option', { value: v }, l)));
    const controls = h('div', { class: 'ops-tools' },
      h('button', { type: 'button', class: 'btn btn-small', 'data-testid': 'tube-kick-all', onclick: () => this.kickAll(tube, t.currentJobsBuried > 0 ? 'buried' : 'delayed') }, 'Kick all'),
      paused
        ? h('button', { type: 'button', class: 'btn btn-small', 'data-testid': 'tube-resume', onclick: () => this.pause(tube, '0s') }, 'Resume')
        : h('span', { class: 'field' }, h('label', { for: 'pause-for' }, 'Pause for'), h('span', {}, pauseFor, ' ',
          h('button', { type: 'button', class: 'btn btn-small', 'data-testid': 'tube-pause', onclick: () => this.pause(tube, pauseFor.value) }, 'Pause'))));
    const next = h('div', {});
    for (const s of ['ready', 'delayed', 'buried']) {
      const j = t.next?.[s];
      next.append(h('h3', { class: 'h4' }, `Next ${s}`),
        j ? h('div', {}, h('a', { href: `#/job/${j.id}`, class: 'job-link' }, `#${j.id}`),
          h('pre', { class: 'payload', tabindex: '0', 'aria-label': `Payload of the next ${s} job` }, h('code', {}, prettyPayload(j.payload))))
          : h('p', { class: 'ops-summary' }, 'none'));
    }
    this.body.replaceChildren(fields, controls, links, next);
  }

  async pause(tube, d) {
    if (d !== '0s' && !(await this.confirm(`Pause tube ${tube} for ${PAUSES.find(([v]) => v === d)?.[1] ?? d}? Workers take none of its jobs meanwhile.`, 'Pause'))) return;
    let res;
    try {
      res = await this.api.changeTube(tube, { pause: d });
    } catch (err) {
      this.toast(`Could not reach the API: ${err.message}`, 'error');
      return;
    }
    if (!res.ok) {
      this.toast(`${d === '0s' ? 'Resume' : 'Pause'} failed: ${errorText(res)}`, 'error');
      return;
    }
    this.toast(d === '0s' ? `Tube ${tube} resumed` : `Tube ${tube} paused`);
    this.reload();
  }
}

function setRowState(row, state) {
  row.dataset.state = state;
  const badge = row.querySelector('.ops-row-head .badge');
  badge.dataset.state = state;
  badge.textContent = LABEL[state] ?? state;
}

/**
 * confirmAction asks in the confirm dialog and resolves true when the user
 * confirms; Escape or Cancel resolve false.
 */
export function confirmAction(text, okLabel = 'Confirm', root = document) {
  const dialog = root.getElementById('confirm-dialog');
  const form = root.getElementById('confirm-form');
  const cancel = root.getElementById('confirm-cancel');
  const ok = root.getElementById('confirm-ok');
  root.getElementById('confirm-text').textContent = text;
  ok.textContent = okLabel;
  const opener = document.activeElement;
  return new Promise((resolve) => {
    const done = (v) => {
      form.removeEventListener('submit', onOk);
      cancel.removeEventListener('click', onCancel);
      dialog.removeEventListener('cancel', onCancel);
      if (dialog.open) dialog.close();
      if (opener instanceof HTMLElement && opener.isConnected) opener.focus();
      resolve(v);
    };
    const onOk = (e) => {
      e.preventDefault();
      done(true);
    };
    const onCancel = (e) => {
      e.preventDefault();
      done(false);
    };
    form.addEventListener('submit', onOk);
    cancel.addEventListener('click', onCancel);
    dialog.addEventListener('cancel', onCancel);
    dialog.showModal();
    cancel.focus();
  });
}

// The live feed of completed jobs, newest first. At a thousand completions
// a second the DOM is touched once per animation frame, with only the rows
// that will stay visible, and the table never holds more than maxRows.

import { clock, duration, h, schedule } from './util.js';

/** Feed renders completions into the feed table. */
export class Feed {
  constructor({ root = document, maxRows = 200, onOpen }) {
    this.body = root.getElementById('feed-body');
    this.scroller = root.getElementById('feed-scroll');
    this.empty = root.getElementById('feed-empty');
    this.pauseButton = root.getElementById('feed-pause');
    this.pausedNote = root.getElementById('feed-paused');
    this.template = root.getElementById('feed-row');
    this.earlierNote = root.getElementById('feed-earlier');
    this.maxRows = maxRows;
    this.onOpen = onOpen;
    this.pending = [];
    this.paused = false;
    this.missed = 0;
    this.byId = new Map();
    this.render = this.render.bind(this);

    this.pauseButton.addEventListener('click', () => this.setPaused(!this.paused));
    this.body.addEventListener('click', (e) => {
      const b = e.target.closest('.job-link');
      if (b) this.open(b);
    });
    this.scroller.addEventListener('keydown', (e) => this.key(e));
  }

  /**
   * push queues a completed job's result for the next frame; earlier says
   * it completed before the page loaded (the last completions on open).
   */
  push(result, { earlier = false } = {}) {
    this.pending.push(earlier ? { r: result, earlier } : { r: result });
    // Frames do not run in a hidden tab: keep only what could be shown.
    if (this.pending.length > this.maxRows * 2) this.pending.splice(0, this.pending.length - this.maxRows);
    if (this.paused) this.missed++;
    schedule(this.render);
  }

  /**
   * appendEarlier puts results that completed before the page loaded
   * (newest first) under the rows shown, skipping any already there.
   */
  appendEarlier(results) {
    this.earlier = [...(this.earlier ?? []), ...results];
    schedule(this.render);
  }

  setPaused(paused) {
    this.paused = paused;
    this.pauseButton.setAttribute('aria-pressed', String(paused));
    this.pauseButton.textContent = paused ? 'Resume' : 'Pause';
    if (!paused) this.missed = 0;
    schedule(this.render);
  }

  render() {
    this.pausedNote.hidden = !this.paused;
    if (this.paused) {
      this.pausedNote.textContent = this.missed ? `Paused · ${this.missed} new` : 'Paused';
      return;
    }
    if (this.earlier?.length) {
      const frag = document.createDocumentFragment();
      for (const r of this.earlier) {
        if (this.byId.has(String(r._id)) || this.body.childElementCount + frag.childElementCount >= this.maxRows) continue;
        frag.append(this.row(r, true));
      }
      this.earlier = [];
      this.body.append(frag);
      if (this.body.childElementCount) this.empty.hidden = true;
      this.earlierNote.hidden = !this.body.querySelector('[data-earlier]');
    }
    if (this.pending.length === 0) return;
    const batch = this.pending.length > this.maxRows ? this.pending.slice(-this.maxRows) : this.pending;
    this.pending = [];
    const frag = document.createDocumentFragment();
    for (let i = batch.length - 1; i >= 0; i--) frag.append(this.row(batch[i].r, batch[i].earlier));
    const focused = this.body.contains(document.activeElement);
    this.body.prepend(frag);
    let extra = this.body.childElementCount - this.maxRows;
    while (extra-- > 0) {
      const last = this.body.lastElementChild;
      this.byId.delete(last.dataset.jobId);
      last.remove();
    }
    if (focused && !this.body.contains(document.activeElement)) this.scroller.focus();
    this.empty.hidden = true;
    this.earlierNote.hidden = !this.body.querySelector('[data-earlier]');
  }

  row(r, earlier) {
    const row = this.template.content.firstElementChild.cloneNode(true);
    const id = String(r._id);
    row.dataset.jobId = id;
    if (earlier) row.dataset.earlier = 'true';
    const [job, tube, hash, worker, run, done] = row.children;
    const b = job.firstElementChild;
    b.textContent = `#${id}`;
    b.setAttribute('aria-label', `Job ${id}, details`);
    tube.textContent = r.tube ?? '';
    const code = hash.firstElementChild;
    // A handler other than md5 has a result instead of a hash.
    const shown = r.hash ?? (r.result === undefined ? '' : JSON.stringify(r.result));
    code.textContent = shown.length > 64 ? `${shown.slice(0, 63)}…` : shown;
    code.title = shown;
    worker.textContent = r.worker ?? '';
    worker.title = r.worker ?? '';
    run.textContent = duration(r.duration_ms);
    done.textContent = clock(r.completed_at);
    if (earlier) {
      done.title = 'Completed before you opened the board';
      done.append(h('span', { class: 'visually-hidden' }, ', before you opened the board'));
    }
    this.byId.set(id, r);
    return row;
  }

  open(button) {
    const row = button.closest('.feed-row');
    this.onOpen?.(Number(row.dataset.jobId), this.byId.get(row.dataset.jobId));
  }

  /** key moves the focus between rows with the arrow keys, Home, End and Page keys. */
  key(e) {
    const links = [...this.body.querySelectorAll('.job-link')];
    if (links.length === 0) return;
    const i = links.indexOf(document.activeElement);
    let next = -1;
    switch (e.key) {
      case 'ArrowDown': next = i < 0 ? 0 : Math.min(i + 1, links.length - 1); break;
      case 'ArrowUp': next = i < 0 ? 0 : Math.max(i - 1, 0); break;
      case 'Home': next = 0; break;
      case 'End': next = links.length - 1; break;
      case 'PageDown': next = Math.min(Math.max(i, 0) + 10, links.length - 1); break;
      case 'PageUp': next = Math.max(i - 10, 0); break;
      case 'Escape':
        if (i >= 0) {
          e.preventDefault();
          this.scroller.focus();
        }
        return;
      default: return;
    }
    e.preventDefault();
    links[next].focus();
    links[next].scrollIntoView({ block: 'nearest' });
  }
}

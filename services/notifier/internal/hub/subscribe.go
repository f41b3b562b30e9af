package hub

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jobsys/jobs/pkg/job"
)

// lookupTimeout bounds the state lookups of one subscribe message.
const lookupTimeout = 10 * time.Second

// handle applies one client message.
func (h *Hub) handle(ctx context.Context, c *client, m job.ClientMessage) {
	switch {
	case m.Type == job.TypeSubscribe && m.All:
		h.setAll(c, true)
	case m.Type == job.TypeUnsubscribe && m.All:
		h.setAll(c, false)
	case m.Type == job.TypeSubscribe:
		h.subscribe(ctx, c, m.Jobs)
	case m.Type == job.TypeUnsubscribe:
		h.mu.Lock()
		c.mu.Lock()
		for _, id := range m.Jobs {
			if _, ok := c.jobs[id]; ok {
				delete(c.jobs, id)
				h.unwatchLocked(c, id)
			}
		}
		c.mu.Unlock()
		h.mu.Unlock()
	}
}

func (h *Hub) setAll(c *client, all bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	c.mu.Lock()
	c.all = all
	c.mu.Unlock()
	if all {
		h.all[c] = struct{}{}
	} else {
		delete(h.all, c)
	}
}

// subscribe watches the jobs, then answers each with its current state:
// at once from the queue, and for a job gone from it, by the feed or from
// the store (awaitStore). The watch is registered before the lookup, so
// a change between the two still arrives; the client's last-state record
// drops repeats.
func (h *Hub) subscribe(ctx context.Context, c *client, ids []uint64) {
	fresh := h.watchJobs(c, ids)
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	var gone []uint64
	for _, id := range fresh {
		ev, queued, err := h.cfg.Queued(ctx, id)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			h.log.Warn("look up job state", "job_id", id, "err", err)
			h.offer(c, errorFrame(fmt.Sprintf("job %d: state unknown for now: the queue did not answer; still watched", id)))
		case !queued:
			gone = append(gone, id)
		default:
			h.offerState(c, newFrame(ev))
		}
	}
	h.awaitStore(c, gone)
}

// maxStoreBatch is the most jobs one store query asks about.
const maxStoreBatch = 1000

// unanswered is a job gone from the queue whose subscribers wait for its
// state from the store.
type unanswered struct {
	due     time.Time
	clients []*client
}

// awaitStore has c answered about jobs gone from the queue: by the feed,
// when it delivers their completions within StoreDelay, or else from the
// store.
func (h *Hub) awaitStore(c *client, ids []uint64) {
	if len(ids) == 0 {
		return
	}
	due := time.Now().Add(h.cfg.StoreDelay)
	h.mu.Lock()
	for _, id := range ids {
		u := h.unanswered[id]
		if u == nil {
			u = &unanswered{due: due}
			h.unanswered[id] = u
		}
		if !slices.Contains(u.clients, c) {
			u.clients = append(u.clients, c)
		}
	}
	h.mu.Unlock()
	select {
	case h.kick <- struct{}{}:
	default: // the answerer has been woken already
	}
}

// answerFromStore answers the subscribers of jobs gone from the queue
// once StoreDelay has passed without the feed delivering the completion:
// the jobs due together in one store query, so that a burst of
// subscribes costs one read of the results, not one each. It runs until
// Shutdown.
func (h *Hub) answerFromStore() {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-h.ctx.Done():
			return
		case <-h.kick:
		case <-timer.C:
		}
		for {
			batch, wait := h.takeDue(time.Now())
			if len(batch) > 0 {
				h.answer(batch)
				continue
			}
			if wait > 0 {
				timer.Reset(wait)
			}
			break
		}
	}
}

// takeDue removes up to maxStoreBatch due jobs from the unanswered ones
// and returns those whose subscribers still wait: a job whose completion
// was published meanwhile, or that they stopped watching, needs no
// answer. wait is how long until the next job is due, 0 when none waits.
func (h *Hub) takeDue(now time.Time) (batch map[uint64][]*client, wait time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	batch = map[uint64][]*client{}
	for id, u := range h.unanswered {
		if d := u.due.Sub(now); d > 0 {
			if wait == 0 || d < wait {
				wait = d
			}
			continue
		}
		if len(batch) == maxStoreBatch {
			return batch, 0 // the rest in the next batch
		}
		delete(h.unanswered, id)
		w, ok := h.watches[id]
		if !ok || w.completed {
			continue
		}
		var still []*client
		for _, c := range u.clients {
			if w.has(c) {
				still = append(still, c)
			}
		}
		if len(still) > 0 {
			batch[id] = still
		}
	}
	return batch, wait
}

// answer asks the store about the jobs in batch and answers their
// subscribers: a completion goes to every watcher of the job, as the
// feed's would.
func (h *Hub) answer(batch map[uint64][]*client) {
	ids := make([]uint64, 0, len(batch))
	for id := range batch {
		ids = append(ids, id)
	}
	ctx, cancel := context.WithTimeout(h.ctx, lookupTimeout)
	found, err := h.cfg.Results.FindMany(ctx, ids)
	cancel()
	if err != nil && h.ctx.Err() != nil {
		return // shutting down
	}
	if err != nil {
		h.log.Warn("look up the results of subscribed jobs", "jobs", len(ids), "err", err)
	}
	for id, clients := range batch {
		var f *frame
		switch r, ok := found[id]; {
		case err != nil:
			f = errorFrame(fmt.Sprintf("job %d: state unknown for now: the results store did not answer; still watched", id))
		case ok:
			h.JobState(job.Completed(r))
			continue
		default:
			// It may be about to be put: the tracker keeps asking for a
			// while and sends its state if it appears.
			f = errorFrame(notFound(id))
		}
		for _, c := range clients {
			h.offer(c, f)
		}
	}
}

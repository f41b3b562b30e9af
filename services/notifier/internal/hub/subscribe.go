package hub

import (
	"context"
	"fmt"
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

// subscribe watches the jobs, then answers each with its current state.
// The watch is registered before the lookup, so a change between the two
// still arrives; the client's last-state record drops repeats.
func (h *Hub) subscribe(ctx context.Context, c *client, ids []uint64) {
	var fresh []uint64
	h.mu.Lock()
	c.mu.Lock()
	for _, id := range ids {
		if _, ok := c.jobs[id]; ok {
			continue // watched already: it has its state
		}
		if len(c.jobs) >= h.cfg.MaxJobs {
			h.enqueue(c, errorFrame(fmt.Sprintf("watching %d jobs already: unsubscribe from some first", h.cfg.MaxJobs)))
			break
		}
		c.jobs[id] = ""
		w := h.watches[id]
		if w == nil {
			w = &watch{clients: map[*client]struct{}{}}
			h.watches[id] = w
		}
		w.clients[c] = struct{}{}
		fresh = append(fresh, id)
	}
	c.mu.Unlock()
	h.mu.Unlock()

	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	for _, id := range fresh {
		ev, found, err := h.cfg.Lookup(ctx, id)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			h.log.Warn("look up job state", "job_id", id, "err", err)
			h.offer(c, errorFrame(fmt.Sprintf("job %d: state unknown for now (%v); still watched", id, err)))
		case !found:
			// It may be about to be put: the tracker keeps asking for a
			// while and sends its state if it appears.
			h.offer(c, errorFrame(notFound(id)))
		case ev.State == job.StateCompleted:
			f := newFrame(ev)
			h.offerCompletion(c, f)
		default:
			h.offerState(c, newFrame(ev))
		}
	}
}

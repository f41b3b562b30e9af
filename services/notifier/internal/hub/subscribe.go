package hub

import (
	"github.com/jobsys/jobs/pkg/job"
)

// handle applies one client message.
func (h *Hub) handle(c *client, m job.ClientMessage) {
	switch {
	case m.Type == job.TypeSubscribe && m.All:
		h.setAll(c, true)
	case m.Type == job.TypeUnsubscribe && m.All:
		h.setAll(c, false)
	case m.Type == job.TypeSubscribe:
		h.subscribe(c, m.Jobs)
	case m.Type == job.TypeUnsubscribe:
		h.mu.Lock() // lock order: h.mu, then c.mu
		c.mu.Lock()
		for _, id := range m.Jobs {
			if _, ok := c.told.jobs[id]; ok {
				h.unwatchLocked(c, id)
			}
		}
		c.mu.Unlock()
		h.mu.Unlock()
	}
}

func (h *Hub) setAll(c *client, all bool) {
	h.mu.Lock() // lock order: h.mu, then c.mu
	defer h.mu.Unlock()
	c.mu.Lock()
	c.told.all = all
	c.mu.Unlock()
	if all {
		h.all[c] = struct{}{}
	} else {
		delete(h.all, c)
	}
}

// subscribe watches the jobs and hands those newly watched to the
// tracker, which answers each with its current state. The watch is
// registered first, so a change between the two still arrives; the
// client's last-state record drops repeats.
func (h *Hub) subscribe(c *client, ids []uint64) {
	fresh := h.watchJobs(c, ids)
	if len(fresh) == 0 {
		return
	}
	h.mu.Lock()
	for _, id := range fresh {
		h.subscribed[id] = struct{}{}
	}
	h.mu.Unlock()
	select {
	case h.kick <- struct{}{}:
	default: // the tracker has been told already
	}
}

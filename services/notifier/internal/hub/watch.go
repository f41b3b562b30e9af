package hub

import (
	"fmt"
	"slices"
)

// A watch is one (client, job) pair. What they cost is what a client can
// grow, so they are bounded twice: MaxJobs per client and MaxWatches for
// all clients together, and each is kept small: a byte of state in the
// client's told record, and an entry of 24 bytes in the hub's, with no map per
// job unless several clients watch it.

// watch is one job's watchers, held by value in Hub.watches.
type watch struct {
	one *client // the first watcher, nil when none
	// more are the others, nil while there is one. A slice behind a
	// pointer: 8 bytes in every watch, and a second watcher costs a
	// pointer's worth, where a map cost some 200 bytes. Removal scans it,
	// which stays cheap for the few watchers a job has.
	//
	// A job's watch ends when its completion is published; its watchers
	// keep the job in their record of what they were told (told.jobs),
	// which is what MaxJobs and MaxWatches count.
	more *[]*client
}

func (w *watch) add(c *client) {
	switch {
	case w.one == nil:
		w.one = c
	case w.more == nil:
		w.more = &[]*client{c}
	default:
		*w.more = append(*w.more, c)
	}
}

// remove takes c off and says whether nobody watches any more.
func (w *watch) remove(c *client) (empty bool) {
	if w.more != nil {
		m := *w.more
		last := len(m) - 1
		switch i := slices.Index(m, c); {
		case w.one == c:
			w.one = m[last]
		case i >= 0:
			m[i] = m[last]
		default:
			return false // not a watcher
		}
		m[last] = nil // let the collector have it
		if *w.more = m[:last]; last == 0 {
			w.more = nil
		}
		return false
	}
	if w.one == c {
		w.one = nil
	}
	return w.one == nil
}

func (w watch) has(c *client) bool {
	return w.one == c || (w.more != nil && slices.Contains(*w.more, c))
}

func (w watch) each(f func(c *client)) {
	if w.one != nil {
		f(w.one)
	}
	if w.more != nil {
		for _, c := range *w.more {
			f(c)
		}
	}
}

// watchJobs registers c as a watcher of ids, up to its own limit and the
// hub's, and returns those it did not watch already. A refusal is one
// error frame that says which limit and which ids were left out.
func (h *Hub) watchJobs(c *client, ids []uint64) (fresh []uint64) {
	h.mu.Lock() // lock order: h.mu, then c.mu
	defer h.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, id := range ids {
		if _, ok := c.told.jobs[id]; ok {
			continue // watched already: it has its state
		}
		var refusal string
		switch {
		case len(c.told.jobs) >= h.cfg.MaxJobs:
			refusal = fmt.Sprintf("watching %d jobs already: unsubscribe from some first", h.cfg.MaxJobs)
		case h.nwatches >= h.cfg.MaxWatches:
			h.m.Rejected.WithLabelValues("max_watches").Inc()
			refusal = fmt.Sprintf("the notifier watches %d jobs for all its clients, its limit: try again later", h.cfg.MaxWatches)
		}
		if refusal != "" {
			h.enqueue(c, errorFrame(fmt.Sprintf("%s (job %d and the %d after it in this message are not watched)", refusal, id, len(ids)-i-1)), news)
			break
		}
		c.told.jobs[id] = stateNone
		w := h.watches[id]
		w.add(c)
		h.watches[id] = w
		h.nwatches++
		fresh = append(fresh, id)
	}
	return fresh
}

// unwatchLocked ends c's watch of id: off the job's watchers (gone
// already when it completed) and out of c's record. h.mu and c.mu are
// held; a caller that ranges over c.told.jobs may do so, as Go allows
// deletes while ranging.
func (h *Hub) unwatchLocked(c *client, id uint64) {
	delete(c.told.jobs, id)
	h.nwatches--
	w, ok := h.watches[id]
	if !ok {
		return
	}
	if w.remove(c) {
		delete(h.watches, id)
	} else {
		h.watches[id] = w
	}
}

// Watches is the number of (client, job) watches.
func (h *Hub) Watches() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.nwatches
}

package hub

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/jobsys/jobs/pkg/job"
)

// replayPage is how many results one replay query reads.
const replayPage = 1000

// replayMemory is how long the ids of a replay are kept to drop their
// live duplicates: a result the replay read can still be on its way
// through the feed, at most a poll interval plus the lookback later.
const replayMemory = time.Minute

// writer writes frames to one client.
type writer interface {
	write(ctx context.Context, f *frame) error
	// heartbeat keeps an idle stream open (SSE comments).
	heartbeat(ctx context.Context) error
}

// parseSince checks a since cursor; "" means no replay.
func parseSince(s string) (job.Cursor, error) {
	if s == "" {
		return "", nil
	}
	c := job.Cursor(s)
	if _, _, err := c.Parse(); err != nil {
		return "", err
	}
	return c, nil
}

// pump replays from since, when given, and then writes the client's queued
// frames until ctx ends or a write fails. The client was registered
// before the replay, so live completions queue up meanwhile; those the
// replay already sent are dropped by id (not by cursor: a result that
// committed late can be live with a cursor below the replay's last and
// still be one the replay never saw).
func (h *Hub) pump(ctx context.Context, c *client, w writer, since job.Cursor, heartbeat time.Duration) error {
	var replayed map[uint64]struct{}
	var forgetAt time.Time
	if since != "" {
		var err error
		if replayed, err = h.replay(ctx, c, w, since); err != nil {
			return err
		}
		forgetAt = time.Now().Add(replayMemory)
	}
	var beat <-chan time.Time
	if heartbeat > 0 {
		t := time.NewTicker(heartbeat)
		defer t.Stop()
		beat = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-beat:
			if err := w.heartbeat(ctx); err != nil {
				return err
			}
		case <-c.ready:
			for _, f := range c.take() {
				if replayed != nil && f.state == job.StateCompleted {
					if time.Now().After(forgetAt) {
						replayed = nil
					} else if _, ok := replayed[f.id]; ok {
						continue
					}
				}
				if err := h.write(ctx, c, w, f); err != nil {
					return err
				}
			}
			c.written()
		}
	}
}

func (h *Hub) write(ctx context.Context, c *client, w writer, f *frame) error {
	if err := w.write(ctx, f); err != nil {
		c.mu.Lock()
		dropped := c.dropped
		c.dropped = true
		c.mu.Unlock()
		if !dropped && ctx.Err() == nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded)) {
			// A peer that takes nothing for the write timeout is gone or
			// stuck: its connection is closed.
			h.m.Dropped.WithLabelValues("write_timeout").Inc()
			h.log.Info("client write timed out: closing it", "timeout", h.cfg.WriteTimeout)
		}
		return err
	}
	h.m.EventsSent.WithLabelValues(f.typ).Inc()
	if f.live && !f.at.IsZero() {
		h.m.PushLatency.Observe(time.Since(f.at).Seconds())
	}
	return nil
}

// replay writes the completions after since, up to the replay limit; when
// there are more, or MongoDB fails, it ends with a gap frame that carries
// the cursor of the last completion it sent. It returns the ids sent.
func (h *Hub) replay(ctx context.Context, c *client, w writer, since job.Cursor) (map[uint64]struct{}, error) {
	at, id, err := since.Parse()
	if err != nil {
		return nil, err
	}
	sent := map[uint64]struct{}{}
	last := since
	complete := false
	var failure error
	for len(sent) < h.cfg.ReplayLimit {
		n := min(replayPage, h.cfg.ReplayLimit-len(sent))
		qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		rs, err := h.cfg.Store.After(qctx, at, id, n)
		cancel()
		if err != nil {
			failure = err
			break
		}
		for _, r := range rs {
			f := newFrame(job.Completed(r))
			if err := h.write(ctx, c, w, f); err != nil {
				return nil, err
			}
			sent[r.ID] = struct{}{}
			at, id, last = r.StoredAt, r.ID, f.cursor
		}
		if len(rs) < n {
			complete = true
			break
		}
	}
	if !complete && failure == nil {
		// At the limit: complete only if nothing follows.
		qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		rs, err := h.cfg.Store.After(qctx, at, id, 1)
		cancel()
		complete, failure = err == nil && len(rs) == 0, err
	}
	if !complete {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		reason := fmt.Sprintf("more than %d completions after the cursor", h.cfg.ReplayLimit)
		if failure != nil {
			reason = fmt.Sprintf("replay failed: %v", failure)
			h.log.Warn("replay", "err", failure, "since", since)
		}
		gap := newFrame(job.Event{Type: job.TypeGap, Cursor: last, Error: reason})
		if err := h.write(ctx, c, w, gap); err != nil {
			return nil, err
		}
	}
	return sent, nil
}

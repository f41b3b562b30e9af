package hub

import (
	"context"
	"errors"
	"os"
	"time"
)

// replayMemory is how long the ids of a replay are kept to drop their
// live duplicates: a result the replay read can still be on its way
// through the feed, at most the feed's delay plus the lookback later.
const replayMemory = time.Minute

// writer writes frames to one client.
type writer interface {
	write(ctx context.Context, f *frame) error
	// heartbeat keeps an idle stream open (SSE comments).
	heartbeat(ctx context.Context) error
}

// pump replays what rq asks for, when anything (from mem when the recent
// completions held it, else from the store), and then writes the
// client's queued frames until ctx ends or a write fails. SSE clients
// have one in their handler; a WebSocket client's wsSession does the same
// with a writer that runs only while frames wait. The client was
// registered before the replay, so live completions queue up meanwhile;
// those the replay already sent are dropped by id, as the client's told
// record decides (not by cursor: a result that committed late can be
// live with a cursor below the replay's last and still be one the replay
// never saw).
func (h *Hub) pump(ctx context.Context, c *client, w writer, rq *replayRequest, mem *memoryReplay, heartbeat time.Duration) error {
	if rq.wanted() {
		replayed, err := h.replay(ctx, c, w, rq, mem)
		h.done(rq) // the live events that follow cost the store nothing
		if err != nil {
			return err
		}
		c.mu.Lock()
		c.told.sentByReplay(replayed, time.Now().Add(replayMemory))
		c.mu.Unlock()
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
			if err := h.writeAll(ctx, c, w, c.take()); err != nil {
				return err
			}
		}
	}
}

// writeAll writes frames taken from c's queue, but for the completions
// its replay sent already, and then tells c they are out.
func (h *Hub) writeAll(ctx context.Context, c *client, w writer, fs []*frame) error {
	for _, f := range fs {
		c.mu.Lock()
		dup := c.told.replayedAlready(f, time.Now())
		c.mu.Unlock()
		if dup {
			continue
		}
		if err := h.write(ctx, c, w, f); err != nil {
			return err
		}
	}
	c.written()
	return nil
}

func (h *Hub) write(ctx context.Context, c *client, w writer, f *frame) error {
	if err := w.write(ctx, f); err != nil {
		c.mu.Lock()
		dropped := c.dropped
		c.dropped = true
		c.mu.Unlock()
		// Not ctx: net/http cancels an SSE request's context as soon as a
		// write fails, so that would hide every SSE client that timed out.
		if !dropped && h.ctx.Err() == nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded)) {
			// A peer that takes nothing for the write timeout is gone or
			// stuck: its connection is closed.
			h.m.Dropped.WithLabelValues("write_timeout").Inc()
			h.log.Info("client write timed out: closing it", "transport", c.transport, "timeout", h.cfg.WriteTimeout)
		}
		return err
	}
	h.m.EventsSent.WithLabelValues(f.typ).Inc()
	if f.live && !f.at.IsZero() {
		h.m.PushLatency.Observe(time.Since(f.at).Seconds())
	}
	return nil
}

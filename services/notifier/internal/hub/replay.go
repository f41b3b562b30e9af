package hub

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/jobsys/jobs/pkg/job"
)

// replayPage is how many results one replay query reads: the memory of
// one replay, in the notifier and in the store, is bounded by a page.
const replayPage = 1000

// MaxLast is the most recent completions ?last= may ask for.
const MaxLast = 500

// replayRequest is what a new client asked to be replayed: the
// completions after since, or the last n.
type replayRequest struct {
	since job.Cursor
	last  int
	// held: a replay place was taken at admission for the first store
	// query. query gives it back after that query, done when none ran.
	held bool
}

func (rq *replayRequest) wanted() bool { return rq.since != "" || rq.last > 0 }

// position is where a since replay starts.
func (rq *replayRequest) position() (position, bool) {
	at, id, err := rq.since.Parse()
	return position{at: at, id: id}, err == nil
}

// done gives back a place taken for a replay that read nothing.
func (h *Hub) done(rq *replayRequest) {
	if rq.held {
		rq.held = false
		<-h.replays
	}
}

// query runs one store query of a replay in a replay place: the one
// taken at admission, else the next free one. The place is given back
// before the results are written: a client that does not read must not
// hold one (four such clients held them all for the 35 s their writes
// took to time out, and every replay waited).
func (h *Hub) query(ctx context.Context, rq *replayRequest, q func(ctx context.Context) ([]job.Result, error)) ([]job.Result, error) {
	if !rq.held {
		// New replays first: the next page of a large replay waits
		// while one waits for admission, which otherwise lost the race
		// for a place to the pages of replays already running and got
		// 503 after ReplayWait.
		for h.arriving.Load() > 0 {
			select {
			case <-time.After(10 * time.Millisecond):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		select {
		case h.replays <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	rq.held = false
	defer func() { <-h.replays }()
	qctx, cancel := context.WithTimeout(ctx, h.cfg.ReplayTimeout)
	defer cancel()
	return q(qctx)
}

// badRequest is a refused replay request: its message and detail.
type badRequest struct{ msg, detail string }

func (e *badRequest) Error() string { return e.msg + ": " + e.detail }

// parseReplay reads ?since= and ?last= and, on SSE, the Last-Event-ID
// header, which wins: EventSource sends it on every reconnect, to the URL
// of the first connection, ?last= included. That cursor is rewound by
// the lookback, because a completion stamped just before it can commit
// after it and would be missed by an exact replay.
func (h *Hub) parseReplay(r *http.Request, sse bool) (replayRequest, *badRequest) {
	rq := replayRequest{}
	q := r.URL.Query()
	if id := r.Header.Get("Last-Event-ID"); sse && id != "" {
		at, _, err := job.Cursor(id).Parse()
		if err != nil {
			return rq, &badRequest{"bad since cursor", "Last-Event-ID: " + err.Error()}
		}
		// A cursor nearer the epoch than the lookback rewinds to the
		// start: a time before 1970 has no cursor, and the replay then
		// failed to parse it and closed the stream without a word, so
		// EventSource reconnected forever.
		rq.since = job.NewCursor(maxTime(at.Add(-h.cfg.Lookback), time.UnixMilli(0)), 0)
		return rq, nil
	}
	since, last := q.Get("since"), q.Get("last")
	if since != "" && last != "" {
		return rq, &badRequest{"bad replay request", "give since or last, not both"}
	}
	if since != "" {
		if _, _, err := job.Cursor(since).Parse(); err != nil {
			return rq, &badRequest{"bad since cursor", err.Error()}
		}
		rq.since = job.Cursor(since)
	}
	if last != "" {
		n, err := strconv.Atoi(last)
		if err != nil || n < 1 || n > MaxLast {
			return rq, &badRequest{"bad last", fmt.Sprintf("last must be a whole number from 1 to %d, not %q", MaxLast, last)}
		}
		rq.last = n
	}
	return rq, nil
}

// acceptReplay parses the replay a new client asks for and, unless the
// recent completions in memory hold it, takes a place among the
// concurrent replays for its first store query, waiting up to
// ReplayWait. It answers the request itself (400, or 503 with
// Retry-After) and returns false when the client is refused. Replays
// read MongoDB, and many at once took it down; live events and replays
// from memory cost it nothing, so only replays from the store wait.
func (h *Hub) acceptReplay(w http.ResponseWriter, r *http.Request, sse bool) (replayRequest, bool) {
	rq, bad := h.parseReplay(r, sse)
	if bad != nil {
		h.m.Rejected.WithLabelValues("bad_request").Inc()
		writeError(w, http.StatusBadRequest, bad.msg, bad.detail)
		return rq, false
	}
	if !rq.wanted() || h.recent.covers(&rq) {
		return rq, true
	}
	t := time.NewTimer(h.cfg.ReplayWait)
	defer t.Stop()
	h.arriving.Add(1)
	defer h.arriving.Add(-1)
	select {
	case h.replays <- struct{}{}:
		rq.held = true
		return rq, true
	case <-t.C:
	case <-r.Context().Done():
	case <-h.ctx.Done():
	}
	h.m.Rejected.WithLabelValues("max_replays").Inc()
	w.Header().Set("Retry-After", "1")
	writeError(w, http.StatusServiceUnavailable, "too many replays",
		fmt.Sprintf("%d replays are running; try again in a second", h.cfg.MaxReplays))
	return rq, false
}

// memoryReplay is a replay copied from the recent completions as the
// client registered: frames to write, and more when the since replay
// stopped at the replay limit.
type memoryReplay struct {
	frames []*frame
	more   bool
}

// fromMemory copies the replay rq asks for from the recent completions,
// or returns nil when they do not hold it. h.mu is held: the client
// registers at the same moment, so every completion is in the copy or
// in its queue (or both: the pump drops the repeat).
func (h *Hub) fromMemory(rq *replayRequest) *memoryReplay {
	if rq.last > 0 {
		if fs, ok := h.recent.last(rq.last); ok {
			return &memoryReplay{frames: fs}
		}
		return nil
	}
	p, ok := rq.position()
	if !ok {
		return nil
	}
	if fs, more, ok := h.recent.since(p, h.cfg.ReplayLimit); ok {
		return &memoryReplay{frames: fs, more: more}
	}
	return nil
}

// replay writes what rq asks for, from mem when it holds it, and
// returns the ids sent.
func (h *Hub) replay(ctx context.Context, c *client, w writer, rq *replayRequest, mem *memoryReplay) (map[uint64]struct{}, error) {
	if mem != nil {
		h.m.Replays.WithLabelValues("memory").Inc()
		sent := make(map[uint64]struct{}, len(mem.frames))
		for _, f := range mem.frames {
			if err := h.write(ctx, c, w, f); err != nil {
				return nil, err
			}
			sent[f.id] = struct{}{}
		}
		if mem.more {
			last := mem.frames[len(mem.frames)-1].cursor
			reason := fmt.Sprintf("more than %d completions after the cursor", h.cfg.ReplayLimit)
			if err := h.write(ctx, c, w, newFrame(job.Event{Type: job.TypeGap, Cursor: last, Error: reason})); err != nil {
				return nil, err
			}
		}
		return sent, nil
	}
	h.m.Replays.WithLabelValues("store").Inc()
	if rq.last > 0 {
		return h.replayLast(ctx, c, w, rq)
	}
	return h.replaySince(ctx, c, w, rq)
}

// replayFailed is what a client is told when the store fails during a
// replay. The error itself, which names the servers, goes to the log.
const replayFailed = "replay failed: the results store did not answer; reconnect later with this cursor"

// replaySince writes the completions after since, up to the replay
// limit; when there are more, or MongoDB fails, it ends with a gap frame
// that carries the cursor of the last completion it sent.
func (h *Hub) replaySince(ctx context.Context, c *client, w writer, rq *replayRequest) (map[uint64]struct{}, error) {
	since := rq.since
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
		rs, err := h.query(ctx, rq, func(qctx context.Context) ([]job.Result, error) { return h.cfg.Store.After(qctx, at, id, n) })
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
		rs, err := h.query(ctx, rq, func(qctx context.Context) ([]job.Result, error) { return h.cfg.Store.After(qctx, at, id, 1) })
		complete, failure = err == nil && len(rs) == 0, err
	}
	if !complete {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		reason := fmt.Sprintf("more than %d completions after the cursor", h.cfg.ReplayLimit)
		if failure != nil {
			reason = replayFailed
			h.log.Warn("replay", "err", failure, "since", since)
		}
		if err := h.write(ctx, c, w, newFrame(job.Event{Type: job.TypeGap, Cursor: last, Error: reason})); err != nil {
			return nil, err
		}
	}
	return sent, nil
}

// replayLast writes the n most recent completions, oldest first. When
// the store fails it sends a gap without a cursor: the client gets live
// completions from then on.
func (h *Hub) replayLast(ctx context.Context, c *client, w writer, rq *replayRequest) (map[uint64]struct{}, error) {
	n := rq.last
	rs, err := h.query(ctx, rq, func(qctx context.Context) ([]job.Result, error) { return h.cfg.Store.Latest(qctx, n) })
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		h.log.Warn("replay the last completions", "err", err, "last", n)
		gap := newFrame(job.Event{Type: job.TypeGap, Error: "replay failed: the results store did not answer; live completions follow"})
		return map[uint64]struct{}{}, h.write(ctx, c, w, gap)
	}
	sent := make(map[uint64]struct{}, len(rs))
	for _, r := range rs {
		if err := h.write(ctx, c, w, newFrame(job.Completed(r))); err != nil {
			return nil, err
		}
		sent[r.ID] = struct{}{}
	}
	return sent, nil
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

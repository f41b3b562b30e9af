package hub

import (
	"context"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/jobsys/jobs/pkg/job"
)

// recent holds the latest completions the hub published, in cursor order
// (stored_at, then id), within a budget of bytes. The notifier sees every
// completion as it happens, so a replay that starts inside this window
// (?last=N, ?since=, Last-Event-ID) is served from memory: it reads no
// store and takes no replay place. Reading the store for the board's
// ?last=50 took a full scan on the embedded default, and queued behind
// large replays.
//
// It holds every completion with a cursor above floor that the feed has
// delivered. floor starts unknown (nothing is served from memory) until
// prime learns the newest stored result after the feed started: every
// result above it is stored later, so the feed delivers it. When the
// budget is spent the oldest entry goes and floor rises to it; a late
// commit below floor is not kept, as a replay from there reads the store.
type recent struct {
	budget int // bytes

	mu      sync.Mutex
	entries []recentEntry // ascending; entries[:start] are spent
	start   int
	bytes   int
	floor   position
	primed  bool
}

// position is a place in cursor order.
type position struct {
	at time.Time
	id uint64
}

func (p position) less(q position) bool {
	if !p.at.Equal(q.at) {
		return p.at.Before(q.at)
	}
	return p.id < q.id
}

type recentEntry struct {
	pos  position
	f    *frame
	cost int
}

// entryOverhead is what an entry costs besides its frame's JSON: the
// frame, its cursor and the entry itself, rounded up.
const entryOverhead = 256

func newRecent(budget int) *recent { return &recent{budget: budget} }

// add records a published completion and its frame; h.mu is held (lock
// order: h.mu, then r.mu), so a client registered under h.mu either has
// it in the window it copies or gets it live.
func (r *recent) add(res job.Result, f *frame) {
	if r.budget <= 0 {
		return
	}
	p := position{at: res.StoredAt, id: res.ID}
	e := recentEntry{pos: p, f: f, cost: len(f.data) + len(f.cursor) + entryOverhead}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.primed && !r.floor.less(p) {
		return // a replay from below floor reads the store
	}
	live := r.entries[r.start:]
	i, found := slices.BinarySearchFunc(live, p, func(e recentEntry, p position) int {
		switch {
		case e.pos.less(p):
			return -1
		case p.less(e.pos):
			return 1
		}
		return 0
	})
	if found {
		return // delivered twice (a feed that restarted)
	}
	if i == len(live) {
		r.entries = append(r.entries, e) // the usual case: the newest
	} else {
		r.entries = slices.Insert(r.entries, r.start+i, e)
	}
	r.bytes += e.cost
	for r.bytes > r.budget && r.start < len(r.entries) {
		old := r.entries[r.start]
		r.entries[r.start] = recentEntry{}
		r.start++
		r.bytes -= old.cost
		if r.floor.less(old.pos) {
			r.floor = old.pos
		}
	}
	if r.start > len(r.entries)/2 { // compact: the spent half goes
		r.entries = slices.Delete(r.entries, 0, r.start)
		r.start = 0
	}
}

// prime sets the floor to newest, the newest stored result (zero when
// none) once the feed delivers everything stored after it.
func (r *recent) prime(newest position) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.floor.less(newest) {
		r.floor = newest
	}
	live := r.entries[r.start:]
	keep := 0
	for keep < len(live) && !r.floor.less(live[keep].pos) {
		r.bytes -= live[keep].cost
		live[keep] = recentEntry{}
		keep++
	}
	r.start += keep
	r.primed = true
}

// since returns the frames after p, up to limit (more says there were
// more), when the window holds all of them.
func (r *recent) since(p position, limit int) (fs []*frame, more, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.primed || p.less(r.floor) {
		return nil, false, false
	}
	live := r.entries[r.start:]
	i := sort.Search(len(live), func(i int) bool { return p.less(live[i].pos) })
	for _, e := range live[i:] {
		if len(fs) == limit {
			return fs, true, true
		}
		fs = append(fs, e.f)
	}
	return fs, false, true
}

// last returns the n newest frames, oldest first, when the window holds
// them: n entries, or all there are when nothing was ever evicted and the
// store was empty at the start.
func (r *recent) last(n int) ([]*frame, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	live := r.entries[r.start:]
	if !r.primed || (len(live) < n && r.floor != (position{})) {
		return nil, false
	}
	fs := make([]*frame, 0, min(n, len(live)))
	for _, e := range live[max(0, len(live)-n):] {
		fs = append(fs, e.f)
	}
	return fs, true
}

// covers says whether the window holds the replay rq asks for.
func (r *recent) covers(rq *replayRequest) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.primed {
		return false
	}
	if rq.last > 0 {
		return len(r.entries)-r.start >= rq.last || r.floor == (position{})
	}
	p, ok := rq.position()
	return ok && !p.less(r.floor)
}

// size returns the entries held and their cost in bytes.
func (r *recent) size() (entries, bytes int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.entries) - r.start, r.bytes
}

// Prime tells the hub that the completion feed runs: it reads the newest
// stored result, retrying each second until ctx ends, and from then on
// serves replays that start after it from memory. Call it once the feed
// has started.
func (h *Hub) Prime(ctx context.Context) error {
	wait := time.Second
	for {
		// One query at a time, with time to finish: the newest result by
		// stored time is a sort that a large FerretDB collection answers
		// slowly, and a retry would only add load.
		qctx, cancel := context.WithTimeout(ctx, primeTimeout)
		rs, err := h.cfg.Store.Latest(qctx, 1)
		cancel()
		if err == nil {
			var newest position
			if len(rs) > 0 {
				newest = position{at: rs[0].StoredAt, id: rs[0].ID}
			}
			h.recent.prime(newest)
			h.log.Debug("recent completions served from memory", "budget_bytes", h.cfg.RecentBytes)
			return nil
		}
		h.log.Warn("read the newest result: replays read the store until it answers", "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 30*time.Second)
	}
}

// primeTimeout bounds Prime's query.
const primeTimeout = time.Minute

// Package hub fans job events out to WebSocket and Server-Sent Events
// clients: completions to those who subscribed to all of them or to the
// job, state changes to the job's subscribers, queue statistics to every
// WebSocket client, and replays from a cursor on connect: from the
// recent completions it keeps in memory when they hold the replay, else
// from the results store.
//
// The publisher never blocks. Each client has a bounded buffer; a client
// that falls so far behind that its buffer is full is closed with
// StatusPolicyViolation (the pattern of coder/websocket's chat example),
// and the others are not slowed.
package hub

import (
	"context"
	"encoding/json"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/services/notifier/internal/metrics"
)

// ReplayStore reads stored results after a cursor, in completion order,
// and the most recent ones.
type ReplayStore interface {
	After(ctx context.Context, at time.Time, id uint64, limit int) ([]job.Result, error)
	// Latest returns the n most recent results, oldest first.
	Latest(ctx context.Context, n int) ([]job.Result, error)
}

// Config configures a Hub. Zero durations and sizes take the defaults.
type Config struct {
	Store   ReplayStore
	Metrics *metrics.Metrics
	Logger  *slog.Logger

	// ReplayLimit is the most completions one replay sends (10000).
	ReplayLimit int
	// MaxReplays is how many replays (?since=, ?last=, Last-Event-ID)
	// may query the store at once (4); a new one waits ReplayWait (2s)
	// for a place, then gets 503 with Retry-After. Ten replays of a
	// large collection at once took the store down. A place is held for
	// one query at a time, not while the results are written, and a
	// replay served from memory (RecentBytes) takes none.
	MaxReplays int
	ReplayWait time.Duration
	// RecentBytes is the memory that the latest completions may take,
	// for replays that start within them (32 MiB; negative: none). See
	// recent.
	RecentBytes int
	// ReplayTimeout bounds each replay query (10s).
	ReplayTimeout time.Duration
	// Lookback is how far an SSE Last-Event-ID replay rewinds before
	// that cursor (0: none; the notifier uses NOTIFIER_LOOKBACK):
	// completions commit slightly out of cursor order.
	Lookback time.Duration
	// MaxClients caps the connected clients (10000).
	MaxClients int
	// Buffer is each client's queue of frames (1024).
	Buffer int
	// WriteTimeout bounds each write to a client (5s).
	WriteTimeout time.Duration
	// PingInterval is how often WebSocket peers are pinged, and how often
	// an idle SSE stream gets a heartbeat comment (20s).
	PingInterval time.Duration
	// MaxJobs is the most jobs one client may watch (10000), and
	// MaxWatches the most watches of all clients together (1000000):
	// without it, memory grew with clients times MaxJobs.
	MaxJobs    int
	MaxWatches int
	// Admitted, when set, is told of each request the hub admits as a
	// client (the server's bound on pending connections lets it go).
	Admitted func(r *http.Request)
	// SkipOriginCheck: the caller has checked the Origin header already;
	// otherwise coder/websocket allows the request's own host only.
	SkipOriginCheck bool
}

func (c *Config) defaults() {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defd := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.ReplayLimit, 10000)
	def(&c.MaxClients, 10000)
	def(&c.Buffer, 1024)
	def(&c.MaxJobs, 10000)
	def(&c.MaxWatches, 1_000_000)
	def(&c.MaxReplays, 4)
	def(&c.RecentBytes, 32<<20)
	defd(&c.ReplayWait, 2*time.Second)
	defd(&c.ReplayTimeout, 10*time.Second)
	defd(&c.WriteTimeout, 5*time.Second)
	defd(&c.PingInterval, 20*time.Second)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Metrics == nil {
		c.Metrics = metrics.New()
	}
}

// Hub is the set of connected clients and what each watches.
//
// Locks, always taken in this order: mu (the clients, the watches), then
// a client's mu (its queue and its told record), then the recent
// completions' mu. No path takes one while holding a later one.
type Hub struct {
	cfg Config
	log *slog.Logger
	m   *metrics.Metrics

	ctx    context.Context // ends at Shutdown
	cancel context.CancelFunc
	conns  sync.WaitGroup // one per connection handler
	count  atomic.Int64   // connected clients, for MaxClients
	// replays holds a token per replay query reading the store, and
	// arriving counts new replays waiting for one.
	replays  chan struct{}
	arriving atomic.Int32
	// recent are the latest completions, for replays from memory.
	recent *recent

	statsClients atomic.Int64 // clients that want stats
	completions  atomic.Int64 // published, for CompletedTotal

	mu      sync.Mutex
	clients map[*client]struct{}
	all     map[*client]struct{}
	watches map[uint64]watch
	// nwatches counts the (client, job) pairs, for MaxWatches.
	nwatches int
	// subscribed holds the jobs watched since the tracker last took them,
	// whose state it is to look up (at most one per watch); kick tells
	// it there are some.
	subscribed map[uint64]struct{}
	kick       chan struct{}
}

// New returns a hub. Call Shutdown to close its clients.
func New(cfg Config) *Hub {
	cfg.defaults()
	ctx, cancel := context.WithCancel(context.Background())
	h := &Hub{
		cfg: cfg, log: cfg.Logger, m: cfg.Metrics, ctx: ctx, cancel: cancel,
		clients: map[*client]struct{}{}, all: map[*client]struct{}{}, watches: map[uint64]watch{},
		subscribed: map[uint64]struct{}{}, kick: make(chan struct{}, 1),
		replays: make(chan struct{}, cfg.MaxReplays),
		recent:  newRecent(cfg.RecentBytes),
	}
	return h
}

// Shutdown closes every client (WebSocket ones with StatusGoingAway) and
// waits for their handlers, or for ctx.
func (h *Hub) Shutdown(ctx context.Context) error {
	h.cancel()
	done := make(chan struct{})
	go func() { h.conns.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Clients is the number of connected clients.
func (h *Hub) Clients() int { return int(h.count.Load()) }

// admit takes a place for a new client, or answers 503 when the hub is
// full or shutting down. A client admitted is released when it leaves.
func (h *Hub) admit(w http.ResponseWriter, r *http.Request) bool {
	if h.ctx.Err() != nil {
		writeError(w, http.StatusServiceUnavailable, "shutting down", "")
		return false
	}
	if h.count.Add(1) > int64(h.cfg.MaxClients) {
		h.count.Add(-1)
		h.m.Rejected.WithLabelValues("max_clients").Inc()
		writeError(w, http.StatusServiceUnavailable, "too many clients", "")
		return false
	}
	h.conns.Add(1)
	if h.cfg.Admitted != nil {
		h.cfg.Admitted(r)
	}
	return true
}

func (h *Hub) release() {
	h.count.Add(-1)
	h.conns.Done()
}

// frame is one message queued for a client, encoded once for all.
type frame struct {
	typ  string // job, stats, gap, error
	data []byte
	// id is set for job events; cursor and at for completions.
	id     uint64
	state  job.State
	cursor job.Cursor
	at     time.Time
	// live: a completion found by the feed just now, whose push latency
	// is measured.
	live bool
}

func newFrame(ev job.Event) *frame {
	data, err := json.Marshal(ev)
	if err != nil {
		panic(err) // job.Event always encodes
	}
	f := &frame{typ: ev.Type, data: data, id: ev.ID, state: ev.State, cursor: ev.Cursor}
	if ev.Result != nil {
		f.at = ev.Result.CompletedAt
	}
	return f
}

func errorFrame(msg string) *frame { return newFrame(job.Event{Type: job.TypeError, Error: msg}) }

// client is one connection's subscriptions and queue.
//
// The queue is a slice that grows only while frames wait, not a channel
// of Buffer slots: an idle client then holds a few hundred bytes instead
// of 8 KB of empty slots, and ten thousand idle clients are common.
type client struct {
	transport string // ws or sse
	stats     bool   // wants stats frames
	closeSlow func()
	// ready has a value when the queue may hold frames (SSE: its
	// handler's pump waits on it).
	ready chan struct{}
	// start, when set (WebSocket), starts a writer goroutine for the
	// queue; writing says one runs. Both under mu.
	start   func()
	writing bool

	mu    sync.Mutex
	queue []*frame
	// queued counts the frames in queue that are news, and answers
	// those that are answers (see verdict); taken and takenAnswers the
	// same for the frames the writer took and has not written yet. News
	// counts against Buffer, answers against twice MaxJobs.
	queued, answers     int
	taken, takenAnswers int
	told                told
	dropped             bool
}

func (h *Hub) newClient(transport string, all, stats bool) *client {
	c := &client{transport: transport, stats: stats, told: told{all: all, jobs: map[uint64]stateCode{}}}
	if transport != "ws" {
		c.ready = make(chan struct{}, 1)
	}
	return c
}

// take empties the queue and returns what it held, oldest first; the
// frames count against the limits until the writer calls written.
func (c *client) take() []*frame {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.takeLocked()
}

func (c *client) takeLocked() []*frame {
	q := c.queue
	c.queue = nil
	c.taken, c.takenAnswers = c.queued, c.answers
	c.queued, c.answers = 0, 0
	return q
}

// takeOrIdle is take for a writer that ends when the queue is empty: it
// then returns nil, and the next frame queued starts a new writer.
func (c *client) takeOrIdle() []*frame {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.queue) == 0 {
		c.writing = false
		return nil
	}
	return c.takeLocked()
}

// written says the frames of the last take are out.
func (c *client) written() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.taken, c.takenAnswers = 0, 0
}

// enqueue queues f as v says, without blocking; a client past its limit
// is dropped. c.mu is held.
func (h *Hub) enqueue(c *client, f *frame, v verdict) {
	if c.dropped || v == stale {
		return
	}
	full := c.queued+c.taken >= h.cfg.Buffer
	if v == answer {
		full = c.answers+c.takenAnswers >= 2*h.cfg.MaxJobs
	}
	if full {
		c.dropped = true
		h.m.Dropped.WithLabelValues("slow").Inc()
		h.log.Info("client too slow: closing it", "transport", c.transport, "buffer", h.cfg.Buffer)
		go c.closeSlow()
		return
	}
	c.queue = append(c.queue, f)
	if v == answer {
		c.answers++
	} else {
		c.queued++
	}
	if c.start != nil {
		if !c.writing {
			c.writing = true
			c.start()
		}
		return
	}
	select {
	case c.ready <- struct{}{}:
	default: // already signalled
	}
}

// offer queues f for c when told says it is news to c.
func (h *Hub) offer(c *client, f *frame, decide func(t *told) verdict) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h.enqueue(c, f, decide(&c.told))
}

func always(*told) verdict { return news }

// Lock order: h.mu, then a client's mu (then the recent completions'
// mu). Every path that takes two takes them in this order: the hub's
// maps (clients, watches) under h.mu, then each client's queue and
// record under its own.

// add registers c and, when it asked for a replay that the recent
// completions hold, copies it from them at the same moment (see
// fromMemory); nil means the replay reads the store.
func (h *Hub) add(c *client, rq *replayRequest) *memoryReplay {
	h.mu.Lock() // lock order: h.mu, then the recent completions' mu
	defer h.mu.Unlock()
	var mem *memoryReplay
	if rq.wanted() {
		mem = h.fromMemory(rq)
	}
	h.clients[c] = struct{}{}
	if c.stats {
		h.statsClients.Add(1)
	}
	if c.told.all {
		h.all[c] = struct{}{}
	}
	h.m.Clients.WithLabelValues(c.transport).Inc()
	return mem
}

func (h *Hub) remove(c *client) {
	h.mu.Lock() // lock order: h.mu, then c.mu
	defer h.mu.Unlock()
	delete(h.clients, c)
	delete(h.all, c)
	if c.stats {
		h.statsClients.Add(-1)
	}
	c.mu.Lock()
	for id := range c.told.jobs {
		h.unwatchLocked(c, id)
	}
	c.mu.Unlock()
	h.m.Clients.WithLabelValues(c.transport).Dec()
}

// Completed publishes new completions to the clients that want them. It
// never blocks; it is the feed's sink. A completed job's watch ends: its
// watchers have been told, and the tracker stops asking about it.
func (h *Hub) Completed(_ context.Context, rs []job.Result) {
	h.m.Completions.Add(float64(len(rs)))
	h.completions.Add(int64(len(rs)))
	h.mu.Lock() // lock order: h.mu, then each c.mu
	defer h.mu.Unlock()
	for _, r := range rs {
		f := newFrame(job.Completed(r))
		f.live = true
		live := func(t *told) verdict { return t.completion(r.ID, true) }
		for c := range h.all {
			h.offer(c, f, live)
		}
		if w, ok := h.watches[r.ID]; ok {
			w.each(func(c *client) { h.offer(c, f, live) })
			delete(h.watches, r.ID)
		}
		kept := *f
		kept.live = false // a replay's frame is not a push
		h.recent.add(r, &kept)
	}
	_, bytes := h.recent.size()
	h.m.RecentBytes.Set(float64(bytes))
}

// CompletedTotal is how many completions the hub has published, for the
// completions-per-second of the stats frames.
func (h *Hub) CompletedTotal() int64 { return h.completions.Load() }

// JobState sends a watched job's state to its watchers that have not had
// it. A completed event (found in the results store before the feed saw
// it) goes to the job's watchers only, and ends its watch: the feed
// delivers it to everybody else.
func (h *Hub) JobState(ev job.Event) {
	f := newFrame(ev)
	h.mu.Lock() // lock order: h.mu, then each c.mu
	defer h.mu.Unlock()
	w, ok := h.watches[ev.ID]
	if !ok {
		return
	}
	if ev.State == job.StateCompleted {
		w.each(func(c *client) { h.offer(c, f, func(t *told) verdict { return t.completion(ev.ID, false) }) })
		delete(h.watches, ev.ID)
		return
	}
	w.each(func(c *client) { h.offer(c, f, func(t *told) verdict { return t.state(ev.ID, ev.State) }) })
}

// Forget stops watching a job that is in neither the queue nor the
// results store, telling its watchers.
func (h *Hub) Forget(id uint64) {
	h.mu.Lock() // lock order: h.mu, then each c.mu
	defer h.mu.Unlock()
	w, ok := h.watches[id]
	if !ok {
		return
	}
	f := errorFrame(notFound(id) + "; no longer watched")
	w.each(func(c *client) {
		c.mu.Lock()
		delete(c.told.jobs, id)
		h.enqueue(c, f, news)
		c.mu.Unlock()
		h.nwatches--
	})
	delete(h.watches, id)
}

// Watched returns the ids that somebody watches and that have not
// completed, in ascending order.
func (h *Hub) Watched() []uint64 {
	h.mu.Lock()
	ids := slices.Collect(maps.Keys(h.watches))
	h.mu.Unlock()
	slices.Sort(ids)
	return ids
}

// Unknown tells the watchers of id that have had no answer about it yet
// why there is none (the queue or the store did not answer, or the job
// was found nowhere), once; the job stays watched.
func (h *Hub) Unknown(id uint64, why string) {
	h.mu.Lock() // lock order: h.mu, then each c.mu
	defer h.mu.Unlock()
	w, ok := h.watches[id]
	if !ok {
		return
	}
	f := errorFrame(why)
	w.each(func(c *client) { h.offer(c, f, func(t *told) verdict { return t.unknown(id) }) })
}

// Waiting returns those of ids that somebody watches and whose completion
// has not been published.
func (h *Hub) Waiting(ids []uint64) []uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []uint64
	for _, id := range ids {
		if _, ok := h.watches[id]; ok {
			out = append(out, id)
		}
	}
	return out
}

// Subscribed has a value when jobs were newly watched; TakeSubscribed
// returns them.
func (h *Hub) Subscribed() <-chan struct{} { return h.kick }

// TakeSubscribed returns the jobs newly watched since the last call, in
// ascending order, for the tracker to answer with their states.
func (h *Hub) TakeSubscribed() []uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	ids := slices.Collect(maps.Keys(h.subscribed))
	clear(h.subscribed)
	slices.Sort(ids)
	return ids
}

// StatsWanted says whether any client listens to the statistics (every
// WebSocket client does): without one, the tracker does not ask
// beanstalkd for them.
func (h *Hub) StatsWanted() bool { return h.statsClients.Load() > 0 }

// Stats sends queue statistics to every WebSocket client: the busiest
// tubes, the totals over all of them, and how many there are.
func (h *Hub) Stats(tubes map[string]job.TubeStats, totals job.TubeStats, tubeCount, completedLastSecond int) {
	ev := job.Event{Type: job.TypeStats, Tubes: tubes, CompletedLastSecond: &completedLastSecond}
	if tubes != nil { // beanstalkd has answered
		ev.Totals, ev.TubeCount = &totals, &tubeCount
	}
	f := newFrame(ev)
	h.mu.Lock() // lock order: h.mu, then each c.mu
	defer h.mu.Unlock()
	for c := range h.clients {
		if c.stats {
			h.offer(c, f, always)
		}
	}
}

func notFound(id uint64) string { return "job " + strconv.FormatUint(id, 10) + " not found" }

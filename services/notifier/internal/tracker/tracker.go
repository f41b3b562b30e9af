// Package tracker owns the notifier's knowledge of each watched job's
// state: it answers a subscribe with the job's state in the queue, asks
// beanstalkd about watched jobs in bounded rounds, asks the results store,
// in one batched query, about jobs that left the queue without their
// completion arriving, and forgets jobs that exist nowhere. Everything it
// learns goes to the hub, which fans it out; the feed's completions go to
// the hub directly. A second loop of its own (stats.go) sends the queue
// statistics each second while somebody listens.
package tracker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/queue"
	"github.com/jobsys/jobs/pkg/store"
)

// Queue is the part of beanstalkd the tracker asks.
type Queue interface {
	StatsJob(ctx context.Context, id uint64) (job.Stats, error)
	Totals(ctx context.Context) (totals job.TubeStats, tubes int, err error)
	TubeNames(ctx context.Context) ([]string, error)
	TubeStats(ctx context.Context, names []string) (map[string]job.TubeStats, error)
}

// Results finds stored results.
type Results interface {
	FindMany(ctx context.Context, ids []uint64) (map[uint64]job.Result, error)
}

// Hub is the hub as the tracker sees it: the job loop's part and the
// statistics loop's part.
type Hub interface {
	JobHub
	StatsHub
}

// JobHub is where the job loop learns what is watched and tells what it
// finds.
type JobHub interface {
	// Subscribed has a value when jobs were newly watched, and
	// TakeSubscribed returns them.
	Subscribed() <-chan struct{}
	TakeSubscribed() []uint64
	// Watched returns the ids somebody watches that have not completed,
	// in ascending order, and Waiting those of ids that still are.
	Watched() []uint64
	Waiting(ids []uint64) []uint64
	// JobState sends a job's state to its watchers that have not had it.
	JobState(ev job.Event)
	// Unknown tells the watchers of a job that have had no answer about
	// it why there is none.
	Unknown(id uint64, why string)
	// Forget stops watching a job that exists nowhere.
	Forget(id uint64)
}

var (
	_ Queue   = (*queue.Pool)(nil)
	_ Results = (*store.Results)(nil)
)

// Config configures a Tracker.
type Config struct {
	Queue   Queue
	Results Results
	Hub     Hub
	Logger  *slog.Logger
	// Interval between rounds (1s).
	Interval time.Duration
	// Batch is the most watched jobs a round asks beanstalkd about (200).
	Batch int
	// Grace is how long a job that exists nowhere stays watched (30s):
	// it may be about to be put.
	Grace time.Duration
	// StoreDelay is how long a watched job must be gone from the queue
	// before the results store is asked about it (250ms; the notifier
	// uses NOTIFIER_FEED_DELAY), and StoreBatch the most jobs one query
	// asks about (1000). A job gone from the queue has almost always
	// completed, and the feed delivers its completion within
	// milliseconds; asking the store sooner repeats that work.
	StoreDelay time.Duration
	StoreBatch int
	// StatsTubes is how many tubes a stats frame lists, the busiest (50).
	// A round asks beanstalkd about those and as many others, taking
	// turns, plus one server stats for the totals: its cost does not grow
	// with the number of tubes, and any POST can create a tube. Asking
	// about every tube each second made its cost, and the frame's size,
	// grow with the tubes.
	StatsTubes int
	// ListEvery is how often the tube names are listed (10s).
	ListEvery time.Duration
}

// queueLookups is how many stats-job commands are in flight at once, each
// on a pooled connection of its own, so a burst of subscribes costs a
// few round trip times rather than one each in a row.
const queueLookups = 16

// storeTimeout bounds one store query.
const storeTimeout = 10 * time.Second

// Tracker follows watched jobs and the tubes.
type Tracker struct {
	cfg   Config
	log   *slog.Logger
	stats *statsLoop

	// The rest belongs to the job loop's goroutine.
	//
	// known is the last state seen of each watched job; gone the jobs
	// found missing from the queue whose completion has not arrived.
	known map[uint64]job.State
	gone  map[uint64]*goneJob
	next  uint64 // round-robin position: the first id of the next round
}

// goneJob is a watched job missing from the queue: since when, and when
// the store is to be asked about it.
type goneJob struct {
	since, due time.Time
}

// New returns a tracker; it does nothing until Run.
func New(cfg Config) *Tracker {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 200
	}
	if cfg.Grace <= 0 {
		cfg.Grace = 30 * time.Second
	}
	if cfg.StoreDelay <= 0 {
		cfg.StoreDelay = 250 * time.Millisecond
	}
	if cfg.StoreBatch <= 0 {
		cfg.StoreBatch = 1000
	}
	if cfg.StatsTubes <= 0 {
		cfg.StatsTubes = 50
	}
	if cfg.ListEvery <= 0 {
		cfg.ListEvery = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Tracker{cfg: cfg, log: cfg.Logger, known: map[uint64]job.State{}, gone: map[uint64]*goneJob{},
		stats: newStatsLoop(cfg)}
}

// Run runs the job loop and the statistics loop until ctx ends.
func (t *Tracker) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() { t.stats.run(ctx) })
	t.jobs(ctx)
	wg.Wait()
	return nil
}

// jobs answers subscribes, checks watched jobs every interval, and asks
// the store about jobs gone from the queue when they are due, until ctx
// ends.
func (t *Tracker) jobs(ctx context.Context) {
	tick := time.NewTicker(t.cfg.Interval)
	defer tick.Stop()
	due := time.NewTimer(time.Hour)
	defer due.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			t.round(ctx)
		case <-t.cfg.Hub.Subscribed():
			t.subscribed(ctx, t.cfg.Hub.TakeSubscribed())
		case <-due.C:
			t.lookUp(ctx)
		}
		due.Reset(t.untilDue())
	}
}

// subscribed answers newly watched jobs: with their state in the queue,
// sent even when the tracker knew it (the hub sends it to the watchers
// that have not had it), or, for a job gone from the queue, from the
// store once StoreDelay has passed without its completion arriving.
func (t *Tracker) subscribed(ctx context.Context, ids []uint64) {
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	now := time.Now()
	for _, a := range t.queueStates(ctx, ids) {
		switch {
		case a.err != nil:
			t.log.Warn("look up job state", "job_id", a.id, "err", a.err)
			t.cfg.Hub.Unknown(a.id, fmt.Sprintf("job %d: state unknown for now: the queue did not answer; still watched", a.id))
		case a.queued:
			delete(t.gone, a.id)
			t.known[a.id] = a.ev.State
			t.cfg.Hub.JobState(a.ev)
		default:
			g := t.missing(a.id, now)
			// A new watcher waits StoreDelay at most.
			g.due = minTime(g.due, maxTime(g.since.Add(t.cfg.StoreDelay), now))
		}
	}
}

// answer is one job's state in the queue.
type answer struct {
	id     uint64
	ev     job.Event
	queued bool // false: beanstalkd does not know the job
	err    error
}

// queueStates asks beanstalkd about ids, queueLookups at a time, and
// returns the answers in the order of ids.
func (t *Tracker) queueStates(ctx context.Context, ids []uint64) []answer {
	out := make([]answer, len(ids))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(queueLookups, len(ids)) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < len(ids); i = int(next.Add(1) - 1) {
				out[i] = t.queueState(ctx, ids[i])
			}
		})
	}
	wg.Wait()
	return out
}

func (t *Tracker) queueState(ctx context.Context, id uint64) answer {
	st, err := t.cfg.Queue.StatsJob(ctx, id)
	if errors.Is(err, queue.ErrNotFound) {
		return answer{id: id}
	}
	if err != nil {
		return answer{id: id, err: fmt.Errorf("ask the queue about job %d: %w", id, err)}
	}
	return answer{id: id, queued: true, ev: job.Event{Type: job.TypeJob, ID: id, State: st.State}}
}

// missing returns the record of a job found gone from the queue, made
// now when it is new: the store is due to be asked after StoreDelay.
func (t *Tracker) missing(id uint64, now time.Time) *goneJob {
	g := t.gone[id]
	if g == nil {
		g = &goneJob{since: now, due: now.Add(t.cfg.StoreDelay)}
		t.gone[id] = g
	}
	return g
}

// round asks beanstalkd about up to Batch watched jobs, taking turns
// when more are watched, and reports the changes.
func (t *Tracker) round(ctx context.Context) {
	ids := t.cfg.Hub.Watched()
	t.prune(ids)
	if len(ids) == 0 {
		return
	}
	// Start at the first id >= next, wrapping around.
	start, _ := slices.BinarySearch(ids, t.next)
	if start == len(ids) {
		start = 0
	}
	batch := make([]uint64, 0, min(t.cfg.Batch, len(ids)))
	for i := range cap(batch) {
		batch = append(batch, ids[(start+i)%len(ids)])
	}
	t.next = batch[len(batch)-1] + 1
	ctx, cancel := context.WithTimeout(ctx, t.cfg.Interval)
	defer cancel()
	now := time.Now()
	for _, a := range t.queueStates(ctx, batch) {
		switch {
		case a.err != nil:
			t.log.Debug("check watched job", "job_id", a.id, "err", a.err)
		case a.queued:
			delete(t.gone, a.id)
			if t.known[a.id] != a.ev.State {
				t.known[a.id] = a.ev.State
				t.cfg.Hub.JobState(a.ev)
			}
		default:
			t.missing(a.id, now)
		}
	}
}

// untilDue is how long until the store is next due to be asked about a
// gone job: 0 when one is due, an hour when none waits.
func (t *Tracker) untilDue() time.Duration {
	wait := time.Hour
	now := time.Now()
	for _, g := range t.gone {
		wait = min(wait, max(g.due.Sub(now), 0))
	}
	return wait
}

// lookUp asks the store, in one query, about up to StoreBatch jobs gone
// from the queue that are due and still awaited: a stored result is
// reported; a job with none is told not found, asked about again each
// interval, and forgotten after Grace.
func (t *Tracker) lookUp(ctx context.Context) {
	now := time.Now()
	var due []uint64
	for id, g := range t.gone {
		if !g.due.After(now) {
			due = append(due, id)
		}
	}
	slices.Sort(due)
	due = due[:min(len(due), t.cfg.StoreBatch)]
	waiting := t.cfg.Hub.Waiting(due)
	for _, id := range due {
		if _, ok := slices.BinarySearch(waiting, id); !ok {
			delete(t.gone, id) // completed meanwhile, or nobody watches
		}
	}
	if len(waiting) == 0 {
		return
	}
	qctx, cancel := context.WithTimeout(ctx, storeTimeout)
	found, err := t.cfg.Results.FindMany(qctx, waiting)
	cancel()
	if err != nil && ctx.Err() != nil {
		return // stopping
	}
	if err != nil {
		t.log.Warn("look up the results of jobs gone from the queue", "jobs", len(waiting), "err", err)
	}
	now = time.Now()
	for _, id := range waiting {
		g := t.gone[id]
		r, ok := found[id]
		switch {
		case err != nil:
			t.cfg.Hub.Unknown(id, fmt.Sprintf("job %d: state unknown for now: the results store did not answer; still watched", id))
		case ok:
			delete(t.gone, id)
			t.known[id] = job.StateCompleted
			t.cfg.Hub.JobState(job.Completed(r))
			continue
		case now.Sub(g.since) > t.cfg.Grace:
			t.cfg.Hub.Forget(id)
			delete(t.gone, id)
			delete(t.known, id)
			continue
		default:
			// It may be about to be put: rounds keep asking the queue.
			t.cfg.Hub.Unknown(id, fmt.Sprintf("job %d not found", id))
		}
		g.due = now.Add(t.cfg.Interval)
	}
}

// prune forgets jobs nobody watches any more, and those completed.
func (t *Tracker) prune(ids []uint64) {
	for id := range t.known {
		if _, ok := slices.BinarySearch(ids, id); !ok {
			delete(t.known, id)
		}
	}
	for id := range t.gone {
		if _, ok := slices.BinarySearch(ids, id); !ok {
			delete(t.gone, id)
		}
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

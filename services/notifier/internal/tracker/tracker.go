// Package tracker follows the queue for the notifier: the statistics of
// every tube each second, and the state of the jobs somebody watches,
// asked of beanstalkd in bounded rounds, with a job event whenever a
// watched job's state changes.
package tracker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/queue"
	"github.com/jobsys/jobs/pkg/store"
)

// Queue is the part of beanstalkd the tracker asks.
type Queue interface {
	StatsJob(ctx context.Context, id uint64) (job.Stats, error)
	Tubes(ctx context.Context) (map[string]job.TubeStats, error)
}

// Results finds stored results.
type Results interface {
	FindMany(ctx context.Context, ids []uint64) (map[uint64]job.Result, error)
}

// Hub is where the tracker's findings go.
type Hub interface {
	// Watched returns the ids somebody watches that have not completed.
	Watched() []uint64
	// JobState sends a watched job's new state to its watchers.
	JobState(ev job.Event)
	// Forget stops watching a job that exists nowhere.
	Forget(id uint64)
	// TakeCompleted returns the completions published since the last call.
	TakeCompleted() int
	// Stats sends the queue statistics to every client.
	Stats(tubes map[string]job.TubeStats, completedLastSecond int)
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
	// Batch is the most jobs asked about per round (200).
	Batch int
	// Grace is how long a job that exists nowhere stays watched (30s):
	// it may be about to be put.
	Grace time.Duration
	// StoreAfter is how long a watched job must be gone from the queue
	// before the results store is asked about it (3s), and StoreBatch
	// the most jobs a round asks the store about (200), all in one query.
	// A job gone from the queue has almost always completed, and the feed
	// delivers its completion within a poll or two; asking the store
	// sooner repeats that work. On FerretDB every lookup by id reads the
	// whole results table, one id or many: at 330 completions a second,
	// lookups one id at a time took the server from the workers.
	StoreAfter time.Duration
	StoreBatch int
}

// Tracker follows watched jobs and the tubes.
type Tracker struct {
	cfg Config
	log *slog.Logger
	// known is the last state seen of each watched job; missingSince is
	// when a job was first found gone from the queue.
	known        map[uint64]job.State
	missingSince map[uint64]time.Time
	next         uint64 // round-robin position: the first id of the next round
	lastTubes    map[string]job.TubeStats
	queueDown    bool
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
	if cfg.StoreAfter <= 0 {
		cfg.StoreAfter = 3 * time.Second
	}
	if cfg.StoreBatch <= 0 {
		cfg.StoreBatch = 200
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Tracker{cfg: cfg, log: cfg.Logger, known: map[uint64]job.State{}, missingSince: map[uint64]time.Time{}}
}

// Queued asks beanstalkd about job id; queued is false when it does not
// know the job.
func (t *Tracker) Queued(ctx context.Context, id uint64) (ev job.Event, queued bool, err error) {
	st, err := t.cfg.Queue.StatsJob(ctx, id)
	if errors.Is(err, queue.ErrNotFound) {
		return job.Event{}, false, nil
	}
	if err != nil {
		return job.Event{}, false, fmt.Errorf("ask the queue about job %d: %w", id, err)
	}
	return job.Event{Type: job.TypeJob, ID: id, State: st.State}, true, nil
}

// Run checks watched jobs and sends the statistics every interval until
// ctx ends.
func (t *Tracker) Run(ctx context.Context) error {
	tick := time.NewTicker(t.cfg.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		t.stats(ctx)
		t.round(ctx)
	}
}

// stats sends the tubes' counters and the completions of the last
// interval. When beanstalkd does not answer, the last counters are sent
// again so clients still get their heartbeat.
func (t *Tracker) stats(ctx context.Context) {
	qctx, cancel := context.WithTimeout(ctx, t.cfg.Interval)
	tubes, err := t.cfg.Queue.Tubes(qctx)
	cancel()
	switch {
	case err != nil && !t.queueDown:
		t.log.Warn("read tube statistics: sending the last known ones", "err", err)
		t.queueDown = true
	case err == nil:
		if t.queueDown {
			t.log.Info("tube statistics work again")
		}
		t.queueDown = false
		t.lastTubes = tubes
	}
	t.cfg.Hub.Stats(t.lastTubes, t.cfg.Hub.TakeCompleted())
}

// round asks beanstalkd about up to Batch watched jobs, taking turns
// when more are watched, and then the store, in one query, about those
// gone from the queue for StoreAfter.
func (t *Tracker) round(ctx context.Context) {
	ids := t.cfg.Hub.Watched()
	t.prune(ids)
	if len(ids) == 0 {
		return
	}
	// Start at the first id >= next, wrapping around.
	start := 0
	for start < len(ids) && ids[start] < t.next {
		start++
	}
	if start == len(ids) {
		start = 0
	}
	n := min(t.cfg.Batch, len(ids))
	ctx, cancel := context.WithTimeout(ctx, t.cfg.Interval)
	defer cancel()
	var gone []uint64
	for i := range n {
		id := ids[(start+i)%len(ids)]
		if len(gone) == t.cfg.StoreBatch {
			break // the rest waits for its turn in the next round
		}
		due, ok := t.check(ctx, id)
		if !ok {
			break // the queue is not answering: next round
		}
		if due {
			gone = append(gone, id)
		}
		t.next = id + 1
	}
	t.lookUp(ctx, gone)
}

// check asks beanstalkd about one job and reports a change. due is true
// when the job has been gone from the queue for StoreAfter, so the store
// is to be asked; ok is false when beanstalkd did not answer.
func (t *Tracker) check(ctx context.Context, id uint64) (due, ok bool) {
	ev, queued, err := t.Queued(ctx, id)
	if err != nil {
		t.log.Debug("check watched job", "job_id", id, "err", err)
		return false, false
	}
	if queued {
		delete(t.missingSince, id)
		t.report(ev)
		return false, true
	}
	first, seen := t.missingSince[id]
	if !seen {
		first = time.Now()
		t.missingSince[id] = first
	}
	// Before StoreAfter the feed is about to deliver its completion.
	return time.Since(first) >= t.cfg.StoreAfter, true
}

// lookUp asks the store about jobs gone from the queue: a stored result
// is reported, and a job with none is forgotten after Grace.
func (t *Tracker) lookUp(ctx context.Context, ids []uint64) {
	if len(ids) == 0 {
		return
	}
	found, err := t.cfg.Results.FindMany(ctx, ids)
	if err != nil {
		t.log.Debug("look watched jobs up in the store", "jobs", len(ids), "err", err)
		return
	}
	for _, id := range ids {
		if r, ok := found[id]; ok {
			delete(t.missingSince, id)
			t.report(job.Completed(r))
			continue
		}
		if time.Since(t.missingSince[id]) > t.cfg.Grace {
			t.cfg.Hub.Forget(id)
			delete(t.missingSince, id)
			delete(t.known, id)
		}
	}
}

// report sends ev when it changes what the watchers know.
func (t *Tracker) report(ev job.Event) {
	if t.known[ev.ID] != ev.State {
		t.known[ev.ID] = ev.State
		t.cfg.Hub.JobState(ev)
	}
}

// prune forgets jobs nobody watches any more.
func (t *Tracker) prune(ids []uint64) {
	watched := make(map[uint64]struct{}, len(ids))
	for _, id := range ids {
		watched[id] = struct{}{}
	}
	for id := range t.known {
		if _, ok := watched[id]; !ok {
			delete(t.known, id)
		}
	}
	for id := range t.missingSince {
		if _, ok := watched[id]; !ok {
			delete(t.missingSince, id)
		}
	}
}

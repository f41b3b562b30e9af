// Package tracker follows the queue for the notifier: the statistics of
// the queue each second while somebody listens, and the state of the
// jobs somebody watches,
// asked of beanstalkd in bounded rounds, with a job event whenever a
// watched job's state changes.
package tracker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
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
	// StatsWanted says whether any client listens to the statistics.
	StatsWanted() bool
	// Stats sends the queue statistics to the clients that listen: the
	// busiest tubes, the totals over all, and the number of tubes.
	Stats(tubes map[string]job.TubeStats, totals job.TubeStats, tubeCount, completedLastSecond int)
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
	// StatsTubes is how many tubes a stats frame lists, the busiest (50).
	// A round asks beanstalkd about those and as many others, taking
	// turns, plus one server stats for the totals: its cost does not grow
	// with the number of tubes, and any POST can create a tube. With
	// 5,000 tubes, asking about every one each second took half a core of
	// the notifier and of beanstalkd, and made 1.1 MB frames.
	StatsTubes int
	// ListEvery is how often the tube names are listed (10s).
	ListEvery time.Duration
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
	queueDown    bool
	tubes        tubeStats
}

// tubeStats is what the tracker knows of the tubes.
type tubeStats struct {
	names    []string // from the last list-tubes, sorted
	listedAt time.Time
	scan     int                      // the next name a round looks at
	known    map[string]job.TubeStats // the last counters of tubes in names
	top      map[string]job.TubeStats // the last frame's tubes
	totals   job.TubeStats
	count    int
	ok       bool // beanstalkd has answered once
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
	if cfg.StatsTubes <= 0 {
		cfg.StatsTubes = 50
	}
	if cfg.ListEvery <= 0 {
		cfg.ListEvery = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Tracker{cfg: cfg, log: cfg.Logger, known: map[uint64]job.State{}, missingSince: map[uint64]time.Time{},
		tubes: tubeStats{known: map[string]job.TubeStats{}}}
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

// stats sends the queue's counters and the completions of the last
// interval to the clients that listen; with none, beanstalkd is not
// asked. When beanstalkd does not answer, the last counters are sent
// again so clients still get their heartbeat.
func (t *Tracker) stats(ctx context.Context) {
	completed := t.cfg.Hub.TakeCompleted()
	if !t.cfg.Hub.StatsWanted() {
		return
	}
	qctx, cancel := context.WithTimeout(ctx, t.cfg.Interval)
	err := t.readTubes(qctx)
	cancel()
	switch {
	case err != nil && !t.queueDown:
		t.log.Warn("read tube statistics: sending the last known ones", "err", err)
		t.queueDown = true
	case err == nil && t.queueDown:
		t.log.Info("tube statistics work again")
		t.queueDown = false
	}
	s := &t.tubes
	if !s.ok {
		t.cfg.Hub.Stats(nil, job.TubeStats{}, 0, completed)
		return
	}
	t.cfg.Hub.Stats(s.top, s.totals, s.count, completed)
}

// readTubes asks beanstalkd for the totals, the tube names when they are
// ListEvery old, and the counters of at most 2×StatsTubes tubes: the
// busiest known and the next ones in turn.
func (t *Tracker) readTubes(ctx context.Context) error {
	s := &t.tubes
	totals, count, err := t.cfg.Queue.Totals(ctx)
	if err != nil {
		return err
	}
	if s.names == nil || time.Since(s.listedAt) >= t.cfg.ListEvery {
		names, err := t.cfg.Queue.TubeNames(ctx)
		if err != nil {
			return err
		}
		slices.Sort(names)
		s.names, s.listedAt = names, time.Now()
		for name := range s.known {
			if _, ok := slices.BinarySearch(names, name); !ok {
				delete(s.known, name)
			}
		}
	}
	ask := slices.Collect(maps.Keys(s.top))
	for i := 0; i < t.cfg.StatsTubes && i < len(s.names); i++ {
		if s.scan >= len(s.names) {
			s.scan = 0
		}
		if name := s.names[s.scan]; !slices.Contains(ask, name) {
			ask = append(ask, name)
		}
		s.scan++
	}
	got, err := t.cfg.Queue.TubeStats(ctx, ask)
	if err != nil {
		return err
	}
	for _, name := range ask {
		if st, ok := got[name]; ok {
			s.known[name] = st
		} else {
			delete(s.known, name) // gone
		}
	}
	s.top = busiest(s.known, t.cfg.StatsTubes)
	s.totals, s.count, s.ok = totals, count, true
	return nil
}

// busiest returns the n tubes with the most jobs (then the most
// watchers, then by name).
func busiest(known map[string]job.TubeStats, n int) map[string]job.TubeStats {
	names := slices.Collect(maps.Keys(known))
	jobs := func(s job.TubeStats) uint64 { return s.Ready + s.Reserved + s.Delayed + s.Buried }
	slices.SortFunc(names, func(a, b string) int {
		sa, sb := known[a], known[b]
		return cmp.Or(cmp.Compare(jobs(sb), jobs(sa)), cmp.Compare(sb.Watching, sa.Watching), cmp.Compare(a, b))
	})
	top := make(map[string]job.TubeStats, min(n, len(names)))
	for _, name := range names[:min(n, len(names))] {
		top[name] = known[name]
	}
	return top
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

package tracker

import (
	"cmp"
	"context"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/jobsys/jobs/pkg/job"
)

// StatsHub is where the statistics loop sends the queue's counters.
type StatsHub interface {
	// StatsWanted says whether any client listens to the statistics.
	StatsWanted() bool
	// CompletedTotal is how many completions the hub has published.
	CompletedTotal() int64
	// Stats sends the queue statistics to the clients that listen: the
	// busiest tubes, the totals over all, the number of tubes, and the
	// completions of the last interval.
	Stats(tubes map[string]job.TubeStats, totals job.TubeStats, tubeCount, completedLastSecond int)
}

// statsLoop sends the queue statistics every interval while somebody
// listens. It is a loop of its own: a slow beanstalkd delays the stats,
// not the answers to subscribes.
type statsLoop struct {
	cfg Config
	hub StatsHub
	log *slog.Logger

	// The rest belongs to run's goroutine.
	lastTotal int64 // the hub's CompletedTotal at the last frame
	queueDown bool
	names     []string // from the last list-tubes, sorted
	listedAt  time.Time
	scan      int                      // the next name a round looks at
	known     map[string]job.TubeStats // the last counters of tubes in names
	top       map[string]job.TubeStats // the last frame's tubes
	totals    job.TubeStats
	count     int
	ok        bool // beanstalkd has answered once
}

func newStatsLoop(cfg Config) *statsLoop {
	return &statsLoop{cfg: cfg, hub: cfg.Hub, log: cfg.Logger, known: map[string]job.TubeStats{}}
}

func (s *statsLoop) run(ctx context.Context) {
	s.lastTotal = s.hub.CompletedTotal()
	tick := time.NewTicker(s.cfg.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			s.send(ctx)
		}
	}
}

// send sends the queue's counters and the completions of the last
// interval to the clients that listen; with none, beanstalkd is not
// asked. When beanstalkd does not answer, the last counters are sent
// again so clients still get their heartbeat.
func (s *statsLoop) send(ctx context.Context) {
	total := s.hub.CompletedTotal()
	completed := int(total - s.lastTotal)
	s.lastTotal = total
	if !s.hub.StatsWanted() {
		return
	}
	qctx, cancel := context.WithTimeout(ctx, s.cfg.Interval)
	err := s.readTubes(qctx)
	cancel()
	switch {
	case err != nil && !s.queueDown:
		s.log.Warn("read tube statistics: sending the last known ones", "err", err)
		s.queueDown = true
	case err == nil && s.queueDown:
		s.log.Info("tube statistics work again")
		s.queueDown = false
	}
	if !s.ok {
		s.hub.Stats(nil, job.TubeStats{}, 0, completed)
		return
	}
	s.hub.Stats(s.top, s.totals, s.count, completed)
}

// readTubes asks beanstalkd for the totals, the tube names when they are
// ListEvery old, and the counters of at most 2×StatsTubes tubes: the
// busiest known and the next ones in turn.
func (s *statsLoop) readTubes(ctx context.Context) error {
	q := s.cfg.Queue
	totals, count, err := q.Totals(ctx)
	if err != nil {
		return err
	}
	if s.names == nil || time.Since(s.listedAt) >= s.cfg.ListEvery {
		names, err := q.TubeNames(ctx)
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
	for i := 0; i < s.cfg.StatsTubes && i < len(s.names); i++ {
		if s.scan >= len(s.names) {
			s.scan = 0
		}
		if name := s.names[s.scan]; !slices.Contains(ask, name) {
			ask = append(ask, name)
		}
		s.scan++
	}
	got, err := q.TubeStats(ctx, ask)
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
	s.top = busiest(s.known, s.cfg.StatsTubes)
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

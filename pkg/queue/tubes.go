package queue

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/beanstalkd/go-beanstalk"

	"github.com/jobsys/jobs/pkg/job"
)

// TubeNames returns the names of the tubes beanstalkd has (list-tubes).
func (p *Pool) TubeNames(ctx context.Context) ([]string, error) {
	var names []string
	err := p.with(ctx, "list-tubes", func(c *conn) error {
		var err error
		names, err = c.bc.ListTubes()
		return err
	})
	return names, err
}

// TubeStats returns the statistics of the named tubes (stats-tube each,
// on one connection); a tube that does not exist is left out.
func (p *Pool) TubeStats(ctx context.Context, names []string) (map[string]job.TubeStats, error) {
	out := make(map[string]job.TubeStats, len(names))
	err := p.with(ctx, "stats-tube", func(c *conn) error {
		for _, name := range names {
			m, err := beanstalk.NewTube(c.bc, name).Stats()
			if errors.Is(err, beanstalk.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			out[name] = tubeStatsOf(m)
		}
		return nil
	})
	return out, err
}

// Totals returns the job counts over every tube and the number of tubes,
// from one server stats command, whatever the number of tubes. Watching
// is the number of worker connections (current-workers).
func (p *Pool) Totals(ctx context.Context) (totals job.TubeStats, tubes int, err error) {
	m, err := p.ServerStats(ctx)
	if err != nil {
		return job.TubeStats{}, 0, err
	}
	n, err := strconv.Atoi(m["current-tubes"])
	if err != nil {
		return job.TubeStats{}, 0, fmt.Errorf("stats: current-tubes %q: %w", m["current-tubes"], err)
	}
	totals = tubeStatsOf(m)
	totals.Watching = atou(m["current-workers"])
	return totals, n, nil
}

// tubeStatsOf reads the job counts of a stats or stats-tube answer.
func tubeStatsOf(m map[string]string) job.TubeStats {
	return job.TubeStats{
		Ready:    atou(m["current-jobs-ready"]),
		Reserved: atou(m["current-jobs-reserved"]),
		Delayed:  atou(m["current-jobs-delayed"]),
		Buried:   atou(m["current-jobs-buried"]),
		Watching: atou(m["current-watching"]),
	}
}

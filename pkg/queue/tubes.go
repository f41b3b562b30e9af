package queue

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/jobsys/jobs/pkg/job"
)

// TubeNames returns the names of the tubes beanstalkd has (list-tubes).
func (p *Pool) TubeNames(ctx context.Context) ([]string, error) {
	var names []string
	err := p.with(ctx, "list-tubes", func(c *client) error {
		var err error
		names, err = c.listTubes()
		return err
	})
	return names, err
}

// TubeStats returns the statistics of the named tubes (stats-tube each,
// pipelined on one connection); a tube that does not exist is left out.
func (p *Pool) TubeStats(ctx context.Context, names []string) (map[string]job.TubeStats, error) {
	var out map[string]job.TubeStats
	err := p.with(ctx, "stats-tube", func(c *client) error {
		var err error
		out, err = c.tubeStats(names)
		return err
	})
	return out, err
}

// tubeStats runs stats-tube for each name, maxPipelined at a time: a
// batch's answers, a few hundred bytes each, must fit in the socket
// buffers while beanstalkd reads the rest of the batch.
func (c *client) tubeStats(names []string) (map[string]job.TubeStats, error) {
	out := make(map[string]job.TubeStats, len(names))
	var refused error
	for batch := range slices.Chunk(names, maxPipelined) {
		for _, name := range batch {
			c.cmdTube("stats-tube", name)
		}
		if err := c.w.Flush(); err != nil {
			return nil, err
		}
		for _, name := range batch {
			m, err := c.dict("stats-tube")
			switch {
			case errors.Is(err, ErrNotFound):
				// The tube went away, or never was.
			case keepsConn(err):
				// The rest of the batch is still to be read.
				refused = cmp.Or(refused, err)
			case err != nil:
				return nil, err
			default:
				out[name] = tubeStatsOf(m)
			}
		}
	}
	return out, refused
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

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
	err := p.with(ctx, "list-tubes", func(bc *beanstalk.Conn) (err error) {
		names, err = bc.ListTubes()
		return err
	})
	return names, err
}

// TubeStats returns the statistics of the named tubes (stats-tube each,
// on one connection); a tube that does not exist is left out.
func (p *Pool) TubeStats(ctx context.Context, names []string) (map[string]job.TubeStats, error) {
	var out map[string]job.TubeStats
	err := p.with(ctx, "stats-tube", func(bc *beanstalk.Conn) (err error) {
		out, err = tubeStats(bc, names)
		return err
	})
	return out, err
}

func tubeStats(bc *beanstalk.Conn, names []string) (map[string]job.TubeStats, error) {
	out := make(map[string]job.TubeStats, len(names))
	for _, name := range names {
		t := beanstalk.Tube{Conn: bc, Name: name}
		m, err := t.Stats()
		if errors.Is(err, beanstalk.ErrNotFound) {
			continue // the tube went away, or never was
		}
		if err != nil {
			return nil, err
		}
		out[name] = tubeStatsOf(m)
	}
	return out, nil
}

// Tubes returns the statistics of every tube beanstalkd has.
func (p *Pool) Tubes(ctx context.Context) (map[string]job.TubeStats, error) {
	var out map[string]job.TubeStats
	err := p.with(ctx, "list-tubes", func(bc *beanstalk.Conn) error {
		names, err := bc.ListTubes()
		if err != nil {
			return err
		}
		out, err = tubeStats(bc, names)
		return err
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

func atou(s string) uint64 {
	n, _ := strconv.ParseUint(s, 10, 64)
	return n
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

// errBadStats: a stats-job answer without a field, or with one that
// does not parse.
var errBadStats = errors.New("bad stats-job answer")

// jobStats reads a stats-job answer; every numeric field must be there
// and parse.
func jobStats(m map[string]string) (job.Stats, error) {
	s := job.Stats{Tube: m["tube"], State: job.State(m["state"])}
	var pri uint64
	var errs []error
	for _, f := range [...]struct {
		key string
		dst *uint64
	}{
		{"id", &s.ID}, {"pri", &pri}, {"age", &s.Age}, {"delay", &s.Delay}, {"ttr", &s.TTR},
		{"time-left", &s.TimeLeft}, {"file", &s.File}, {"reserves", &s.Reserves}, {"timeouts", &s.Timeouts},
		{"releases", &s.Releases}, {"buries", &s.Buries}, {"kicks", &s.Kicks},
	} {
		v, ok := m[f.key]
		n, err := strconv.ParseUint(v, 10, 64)
		if !ok || err != nil {
			errs = append(errs, fmt.Errorf("field %q = %q", f.key, v))
		}
		*f.dst = n
	}
	s.Pri = uint32(pri)
	if len(errs) > 0 {
		return s, fmt.Errorf("%w: %w", errBadStats, errors.Join(errs...))
	}
	return s, nil
}

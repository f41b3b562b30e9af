package api

import (
	"context"
	"errors"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/store"
)

// held is GET /N/'s answer for a job beanstalkd holds: its stats, with
// the payload, last error and attempts of its failure record when it has
// one. A job never released nor buried has no record and answers its
// stats alone, in the original's shape (the seed's examples); so does one
// whose record cannot be read (logged).
func (h *handler) held(ctx context.Context, s job.Stats) any {
	if h.failures == nil || s.Releases+s.Buries == 0 {
		return s
	}
	// Extra detail, so half the usual budget: a slow MongoDB costs the
	// answer its detail, not its promptness.
	ctx, cancel := context.WithTimeout(ctx, backendTimeout/2)
	defer cancel()
	f, err := h.failures.Get(ctx, s.ID)
	if errors.Is(err, store.ErrNoFailure) {
		return s
	}
	if err != nil {
		h.log.Warn("reading the failure record failed; answering the stats alone", "job_id", s.ID, "err", err)
		return s
	}
	return job.HeldOf(s, f)
}

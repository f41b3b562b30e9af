package api

import (
	"context"
	"errors"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/store"
)

// failureFinder finds a job's failure record; *store.Results has it. It
// is asked of Results rather than being a dependency of its own: the
// results and the failure records live side by side.
type failureFinder interface {
	FindFailure(ctx context.Context, id uint64) (job.Failure, error)
}

var _ failureFinder = (*store.Results)(nil)

// held is GET /N/'s answer for a job beanstalkd holds: its stats, with
// the payload, last error and attempts of its failure record when it has
// one. Without the record (never failed, or MongoDB unreachable, which is
// logged) the stats alone are the answer, as before.
func (h *handler) held(ctx context.Context, s job.Stats) any {
	ff, ok := h.res.(failureFinder)
	if !ok {
		return s
	}
	// Extra detail, so half the usual budget: a slow MongoDB costs the
	// answer its detail, not its promptness.
	ctx, cancel := context.WithTimeout(ctx, backendTimeout/2)
	defer cancel()
	f, err := ff.FindFailure(ctx, s.ID)
	if errors.Is(err, store.ErrNoFailure) {
		return s
	}
	if err != nil {
		h.log.Warn("reading the failure record failed; answering the stats alone", "job_id", s.ID, "err", err)
		return s
	}
	return job.HeldOf(s, f)
}

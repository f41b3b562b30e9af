package api

import (
	"cmp"
	"context"
	"errors"
	"sync"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/store"
)

// held is GET /N/'s answer for a job beanstalkd holds: its stats with its
// payload (a peek), and the last error and attempts of its failure record
// when it has one. A job that was never released nor buried has no
// record, so the record is asked for only when the stats show one of
// those. Both are asked at once, on half the usual budget: a slow
// dependency costs the answer its detail (logged), never its promptness.
func (h *handler) held(ctx context.Context, s job.Stats) any {
	ctx, cancel := context.WithTimeout(ctx, backendTimeout/2)
	defer cancel()
	out := job.Held{Stats: s}
	var wg sync.WaitGroup
	if h.admin != nil {
		wg.Go(func() {
			body, err := h.admin.Peek(ctx, s.ID)
			if err != nil {
				// Gone since its stats (completed, deleted): the stats
				// alone are still a true answer of a moment ago.
				h.log.Debug("peek for GET failed; answering without the payload", "job_id", s.ID, "err", err)
				return
			}
			out.Payload = string(body)
		})
	}
	var f job.Failure
	if h.failures != nil && s.Releases+s.Buries > 0 {
		wg.Go(func() {
			var err error
			f, err = h.failures.Get(ctx, s.ID)
			if err != nil && !errors.Is(err, store.ErrNoFailure) {
				h.log.Warn("reading the failure record failed; answering without it", "job_id", s.ID, "err", err)
			}
		})
	}
	wg.Wait()
	if f.ID == s.ID {
		out.Error, out.Attempts = f.Error, f.Attempts
		out.Payload = cmp.Or(out.Payload, f.Payload)
	}
	return out
}

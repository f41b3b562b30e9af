package api

import (
	"context"
	"errors"
	"net/http"
	"sync"

	"github.com/labstack/echo/v4"

	"github.com/jobsys/jobs/pkg/queue"
	"github.com/jobsys/jobs/pkg/store"
)

// healthz says the process runs.
func (h *handler) healthz(c echo.Context) error {
	return writeJSON(c, http.StatusOK, map[string]string{"status": "ok"})
}

// Readiness is /readyz's answer.
type Readiness struct {
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
	// Checks holds "ok" or what went wrong, for beanstalkd and mongodb.
	Checks map[string]string `json:"checks"`
}

// readyz answers 200 when beanstalkd and MongoDB both answer within the
// backend timeout, and 503 naming the one that did not.
func (h *handler) readyz(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), backendTimeout)
	defer cancel()
	var qerr, merr error
	var wg sync.WaitGroup
	wg.Go(func() { qerr = h.q.Ping(ctx) })
	wg.Go(func() { merr = h.res.Ping(ctx) })
	wg.Wait()

	r := Readiness{Status: "ready", Checks: map[string]string{"beanstalkd": "ok", "mongodb": "ok"}}
	var failed []string
	if errors.Is(qerr, queue.ErrServerFault) {
		r.Checks["beanstalkd"] = "refusing jobs: out of memory or binlog disk full"
		failed = append(failed, "beanstalkd")
	} else if qerr != nil {
		r.Checks["beanstalkd"] = "unreachable"
		failed = append(failed, "beanstalkd")
		h.log.Debug("readyz: beanstalkd", "err", qerr)
	}
	if merr != nil {
		r.Checks["mongodb"] = "unreachable"
		failed = append(failed, "mongodb")
		if errors.Is(merr, store.ErrSlow) {
			// It answers, but its reads have been timing out.
			r.Checks["mongodb"] = "slow"
			failed[len(failed)-1] = "mongodb (too slow)"
		}
		h.log.Debug("readyz: mongodb", "err", merr)
	}
	if len(failed) == 0 {
		return writeJSON(c, http.StatusOK, r)
	}
	r.Status = "unavailable"
	r.Error = "not ready: "
	for i, f := range failed {
		if i > 0 {
			r.Error += " and "
		}
		r.Error += f
	}
	r.Error += " did not answer as it should"
	c.Response().Header().Set(echo.HeaderRetryAfter, "1")
	return writeJSON(c, http.StatusServiceUnavailable, r)
}

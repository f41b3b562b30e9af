package api_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/store"
	"github.com/jobsys/jobs/services/manager/internal/api"
)

// While the store backs off a kind of read that timed out, /readyz says
// MongoDB is too slow (not unreachable), and says it no more once the
// back-off ends.
func TestReadyzSaysTheStoreIsSlow(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	require.Equal(t, http.StatusOK, do(t, "GET", b.URL+"/readyz", "").StatusCode)
	r0 := job.Result{ID: 1, Hash: job.Hash("p"), Payload: "p"}
	require.NoError(t, b.Results.Save(context.Background(), r0))

	// A read whose time is up before it starts times out.
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
		defer cancel()
		_, _ = b.Results.MaxID(ctx)
		return errors.Is(b.Results.Ping(context.Background()), store.ErrSlow)
	}, 5*time.Second, 10*time.Millisecond)

	r := do(t, "GET", b.URL+"/readyz", "")
	requireError(t, r, http.StatusServiceUnavailable, "mongodb (too slow)")
	require.JSONEq(t, `{"beanstalkd":"ok","mongodb":"slow"}`, mustJSON(t, decode[api.Readiness](t, r).Checks))

	require.Eventually(t, func() bool {
		return do(t, "GET", b.URL+"/readyz", "").StatusCode == http.StatusOK
	}, 5*time.Second, 100*time.Millisecond, "the back-off ends after a second")
}

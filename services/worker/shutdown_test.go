package main

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/procs"
	"github.com/jobsys/jobs/pkg/store"
	"github.com/jobsys/jobs/pkg/testenv"
)

// startBinary runs the worker binary against the bundle and returns it
// once /healthz answers, with its metrics URL.
func startBinary(t *testing.T, b bundle, extra map[string]string) (*testenv.Service, string) {
	t.Helper()
	svc := testenv.ServeService(t, testenv.Build(t, "./services/worker"), procs.Worker, b.env(extra))
	return svc, svc.URL + "/metrics"
}

// waitInFlight waits until the worker is working on a job: reserved is
// not enough, as a job reserved at the moment of SIGTERM is handed back
// unworked.
func waitInFlight(t *testing.T, metricsURL string) {
	t.Helper()
	require.Eventually(t, func() bool {
		return strings.Contains(httpGet(t, metricsURL), "\njobs_in_flight 1\n")
	}, 10*time.Second, 20*time.Millisecond)
}

// sigterm stops svc and returns how long it took to exit.
func sigterm(t *testing.T, svc *testenv.Service) time.Duration {
	t.Helper()
	start := time.Now()
	svc.Signal(syscall.SIGTERM)
	took := time.Since(start)
	select {
	case <-svc.Exited():
	default:
		t.Fatalf("worker still running %s after SIGTERM", took)
	}
	require.Equal(t, 0, svc.ExitCode(), "exit code; output:\n%s", svc.Logs())
	return took
}

func TestSIGTERMWithShortGraceReleasesTheJobInFlight(t *testing.T) {
	t.Parallel()
	b := setup(t)
	svc, metrics := startBinary(t, b, map[string]string{"WORK_DELAY": "20s", "WORKER_SHUTDOWN_GRACE": "1s"})
	id := put(t, b, b.Tube, `{"interrupted":true}`, time.Minute)
	waitInFlight(t, metrics)

	took := sigterm(t, svc)
	require.GreaterOrEqual(t, took, time.Second, "the grace is given")
	require.Less(t, took, 4*time.Second)

	s, err := statsJob(b, id)
	require.NoError(t, err)
	require.Equal(t, job.StateReady, s.State, "back in the queue at once, with no delay")
	require.EqualValues(t, 1, s.Releases, "released by the worker, not by the connection closing")
	_, err = find(b, id)
	require.ErrorIs(t, err, store.ErrNotFound)
	require.Contains(t, svc.Logs(), "shutdown grace over")
}

func TestSIGTERMWithLongGraceFinishesTheJobInFlight(t *testing.T) {
	t.Parallel()
	b := setup(t)
	svc, metrics := startBinary(t, b, map[string]string{"WORK_DELAY": "2s", "WORKER_SHUTDOWN_GRACE": "30s"})
	id := put(t, b, b.Tube, `{"finished":true}`, time.Minute)
	waitInFlight(t, metrics)
	queued := put(t, b, b.Tube, `{"queued":true}`, time.Minute)

	took := sigterm(t, svc)
	require.Less(t, took, 5*time.Second)

	r, err := find(b, id)
	require.NoError(t, err)
	require.Equal(t, job.Hash(`{"finished":true}`), r.Hash)
	_, err = statsJob(b, id)
	require.True(t, isNotFound(err), "the finished job is deleted: %v", err)

	// No new job is taken once the shutdown has begun.
	s, err := statsJob(b, queued)
	require.NoError(t, err)
	require.Equal(t, job.StateReady, s.State)
	require.Zero(t, s.Reserves)
}

package main

import (
	"context"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/procs"
	"github.com/jobsys/jobs/pkg/testenv"
)

// startBinary runs the notifier binary for this bundle.
func startBinary(t *testing.T, b bundle, extra map[string]string) (*testenv.Service, *notifier) {
	t.Helper()
	svc := testenv.ServeService(t, testenv.Build(t, "./services/notifier"), procs.Notifier, b.env(0, extra))
	svc.HealthURL = svc.URL + "/readyz"
	require.NoError(t, svc.Wait())
	return svc, &notifier{base: svc.URL}
}

func TestRestartLosesNothingForAClientWithItsCursor(t *testing.T) {
	t.Parallel()
	b := setup(t)
	svc, n := startBinary(t, b, map[string]string{"NOTIFIER_ID": "restart-test"})
	c := dial(t, n.ws("?since="+string(job.NewCursor(time.Now(), 0))), nil)
	b.complete(t, 1, 20)
	last := maxCursor(c.collect(20, 20*time.Second))

	svc.Stop()
	require.Equal(t, websocket.StatusGoingAway, c.closed(5*time.Second))
	require.Equal(t, 0, svc.ExitCode(), "a clean exit on SIGTERM")
	require.Contains(t, svc.Logs(), "stopped")

	b.complete(t, 21, 30) // while it is down
	require.NoError(t, svc.Restart())

	c2 := dial(t, n.ws("?since="+string(last)), nil)
	require.Equal(t, seq(21, 30), sorted(ids(c2.collect(30, 20*time.Second))))
	b.complete(t, 51, 10)
	require.Equal(t, seq(51, 10), sorted(ids(c2.collect(10, 20*time.Second))))
	c2.quiet(500 * time.Millisecond)
}

func TestBinaryRefusesABadConfigurationNamingTheVariables(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	env := b.env(0, map[string]string{"NOTIFIER_MODE": "sometimes", "NOTIFIER_POLL_INTERVAL": "fast"})
	err := run(ctx, func(k string) string { return env[k] }, &testenv.LogBuffer{})
	require.ErrorContains(t, err, "NOTIFIER_MODE")
	require.ErrorContains(t, err, "NOTIFIER_POLL_INTERVAL")
}

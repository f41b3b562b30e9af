package main

import (
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/procs"
	"github.com/jobsys/jobs/pkg/testenv"
)

// startWorker runs the real worker binary on the bundle's tube.
func startWorker(t *testing.T, b bundle, extra map[string]string) *testenv.Service {
	t.Helper()
	bin := testenv.Build(t, "./services/worker")
	env := b.Vars() // the bundle's servers and database, quiet text logs
	env["WORKER_TUBES"] = b.Tube
	maps.Copy(env, extra)
	return testenv.ServeService(t, bin, procs.Worker, env)
}

func TestWithTheWorkerAJobGoesReadyReservedCompleted(t *testing.T) {
	t.Parallel()
	b := setup(t)
	n := start(t, b, nil)
	payload := `{"example":"data"}`
	id := b.put(t, payload)
	c := dial(t, n.ws(""), nil)
	c.send(fmt.Sprintf(`{"type":"subscribe","jobs":[%d]}`, id))
	require.Equal(t, job.Event{Type: job.TypeJob, ID: id, State: job.StateReady}, c.next(5*time.Second))

	startWorker(t, b, map[string]string{"WORK_DELAY": "2s"})
	require.Equal(t, job.Event{Type: job.TypeJob, ID: id, State: job.StateReserved}, c.next(10*time.Second))
	ev := c.next(15 * time.Second)
	require.Equal(t, job.StateCompleted, ev.State)
	require.Equal(t, id, ev.ID)
	require.Equal(t, "09ee943c4fa33cd5a355eb7a4e38f7ef", ev.Result.Hash)
	require.Equal(t, payload, ev.Result.Payload)
	require.Equal(t, job.CursorOf(*ev.Result), ev.Cursor)
	c.quiet(1500 * time.Millisecond)
}

func TestWithTheWorkerAnAllSubscriberGetsEveryCompletionOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	n := start(t, b, nil)
	c := dial(t, n.ws(""), nil)
	subscribeAll(c)
	const total = 200
	want := map[uint64]string{}
	for i := range total {
		p := fmt.Sprintf(`{"i":%d}`, i)
		want[b.put(t, p)] = p
	}
	startWorker(t, b, map[string]string{"WORKER_CONCURRENCY": "8"})
	evs := c.collect(total, 60*time.Second)
	seen := map[uint64]bool{}
	for _, ev := range evs {
		require.False(t, seen[ev.ID], "job %d twice", ev.ID)
		seen[ev.ID] = true
		p, ok := want[ev.ID]
		require.True(t, ok, "job %d was not put by this test", ev.ID)
		require.Equal(t, job.Hash(p), ev.Result.Hash)
	}
	c.quiet(500 * time.Millisecond)
}

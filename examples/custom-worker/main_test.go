package main

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/queue"
	"github.com/jobsys/jobs/pkg/store"
	"github.com/jobsys/jobs/pkg/testenv"
	"github.com/jobsys/jobs/services/worker/jobworker"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// The program, run as its main runs it, against real beanstalkd and
// devmongo: a reverse job's result is stored, a bad payload is buried at
// once with its failure record, and other tubes keep the md5 default.
func TestReverseWorker(t *testing.T) {
	t.Parallel()
	b := testenv.SetupClients(t)
	reverseTube := "reverse"
	env := map[string]string{
		"BEANSTALK_HOST":      b.Beanstalk.Host,
		"BEANSTALK_PORT":      strconv.Itoa(b.Beanstalk.Port),
		"MONGO_URL":           b.Mongo.URL,
		"MONGO_DB":            b.DB,
		"MONGO_COLLECTION":    b.Store.Collection().Name(),
		"WORKER_TUBES":        reverseTube + "," + b.Tube,
		"WORKER_METRICS_HOST": "127.0.0.1",
		"WORKER_METRICS_PORT": "0",
		"WORKER_ID":           "custom",
		"LOG_FORMAT":          "text",
	}
	logs := &testenv.LogBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- jobworker.Run(ctx, newMux(), func(k string) string { return env[k] }, logs) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
		if t.Failed() {
			t.Logf("worker log:\n%s", logs.String())
		}
	})

	put := func(tube, body string) uint64 {
		pctx, pcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer pcancel()
		id, err := b.Queue.Put(pctx, []byte(body), queue.PutOptions{Tube: tube, TTR: time.Minute})
		require.NoError(t, err)
		return id
	}
	find := func(id uint64) (r job.Result) {
		require.Eventually(t, func() bool {
			fctx, fcancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer fcancel()
			var err error
			r, err = b.Store.Find(fctx, id)
			return err == nil
		}, 20*time.Second, 20*time.Millisecond, "job %d never completed", id)
		return r
	}

	ok := put(reverseTube, `{"text":"hello, wörld"}`)
	r := find(ok)
	require.Equal(t, `{"reversed":"dlröw ,olleh","runes":12}`, string(r.Result))
	require.Empty(t, r.Hash)
	require.Equal(t, "custom", r.Worker)

	seed := put(b.Tube, `{"example":"data"}`)
	require.Equal(t, "09ee943c4fa33cd5a355eb7a4e38f7ef", find(seed).Hash, "md5 stays the default")

	bad := put(reverseTube, `{"txt":"typo"}`)
	var f job.Failure
	require.Eventually(t, func() bool {
		fctx, fcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer fcancel()
		var err error
		f, err = b.Store.Failures().Get(fctx, bad)
		return err == nil
	}, 20*time.Second, 20*time.Millisecond)
	require.Equal(t, job.FailureBuried, f.State, "buried at once, not retried")
	require.Equal(t, 1, f.Attempts)
	require.Contains(t, f.Error, `the payload must be {"text": "..."}`)
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	require.Eventually(t, func() bool {
		s, err := b.Queue.StatsJob(sctx, bad)
		require.NoError(t, err)
		return s.State == job.StateBuried
	}, 10*time.Second, 20*time.Millisecond)
	_, err := b.Store.Find(sctx, bad)
	require.ErrorIs(t, err, store.ErrNotFound)
}

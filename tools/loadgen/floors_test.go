package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/store"
	"github.com/jobsys/jobs/pkg/testenv"
)

// TestMain runs the tests; started as the benchmark starts itself for its
// reference HTTP handlers, the test binary serves those instead.
func TestMain(m *testing.M) {
	if len(os.Args) >= 3 && (os.Args[1] == nullHTTPArg || os.Args[1] == plainEchoArg) {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		err := run(ctx, os.Args[1:], func(string) string { return "" }, os.Stdout, os.Stderr)
		stop()
		if err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	testenv.Main(m)
}

// setup returns a bench on the harness's real beanstalkd and FerretDB,
// with a fresh database, and nothing else of the stack.
func setup(t *testing.T) *bench {
	t.Helper()
	tb := testenv.Setup(t)
	o, err := parseOptions([]string{"-duration", "200ms", "-warmup", "0s", "-c", "4", "-jobs", "60"}, func(string) string { return "" }, io.Discard)
	require.NoError(t, err)
	st := &stack{o: o, beanstalkAddr: tb.Beanstalk.Addr(), mongo: tb.Mongo.Client(), mongoDB: tb.DB, mongoColl: "results", feedDelay: 250 * time.Millisecond}
	return &bench{o: o, st: st, prog: newProgress(io.Discard, "off", time.Minute), phases: map[string]any{}}
}

func TestPutFloorAgainstRealBeanstalkd(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tube := "t-" + testenv.RandomName()
	s, cpu, err := b.putRun(context.Background(), b.st.beanstalkAddr, tube, b.o.duration, "put")
	require.NoError(t, err)
	require.Positive(t, s.Count)
	require.Zero(t, s.Errors, s.FirstError)
	require.Contains(t, cpu, "loadgen")

	c, err := dialBeanstalk(context.Background(), b.st.beanstalkAddr, time.Now().Add(5*time.Second))
	require.NoError(t, err)
	defer c.Close()
	ready, _, err := c.tubeStats(tube)
	require.NoError(t, err)
	require.GreaterOrEqual(t, ready, s.Count, "every counted put is in the tube")
}

func TestPutManyReturnsEveryID(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ids, err := putMany(context.Background(), b.st.beanstalkAddr, "t-"+testenv.RandomName(), 101, 8)
	require.NoError(t, err)
	require.Len(t, ids, 101)
	seen := map[uint64]bool{}
	for _, id := range ids {
		require.False(t, seen[id])
		seen[id] = true
	}
}

func TestDrainFloorStoresEveryJob(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	for _, loops := range []int{1, 3} {
		tube := "t-" + testenv.RandomName()
		_, err := putMany(ctx, b.st.beanstalkAddr, tube, b.o.jobs, 4)
		require.NoError(t, err)
		coll := b.st.mongo.Database(b.st.mongoDB).Collection("c" + testenv.RandomName())
		run := drainRun{Tube: tube, Jobs: b.o.jobs}
		require.NoError(t, b.drainLoops(ctx, &run, coll, loops))
		require.Equal(t, b.o.jobs, run.Stored)
		require.Positive(t, run.Seconds)

		// The results are what a worker stores, and resultSpan reads them.
		first, last, n, err := resultSpan(ctx, coll, tube)
		require.NoError(t, err)
		require.Equal(t, b.o.jobs, n)
		require.True(t, last.After(first))
		var r job.Result
		require.NoError(t, coll.FindOne(ctx, bson.D{{Key: "tube", Value: tube}}).Decode(&r))
		require.Equal(t, job.Hash(r.Payload), r.Hash)

		c, err := dialBeanstalk(ctx, b.st.beanstalkAddr, time.Now().Add(5*time.Second))
		require.NoError(t, err)
		ready, reserved, err := c.tubeStats(tube)
		c.Close()
		require.NoError(t, err)
		require.Zero(t, ready+reserved, "every job deleted")
	}
}

func TestDrainOnceFloorCleansUp(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	run, err := b.drainOnce(ctx, 2, true)
	require.NoError(t, err)
	require.Equal(t, b.o.jobs, run.Stored)
	require.Positive(t, run.Rate)
	names, err := b.st.mongo.Database(b.st.mongoDB).ListCollectionNames(ctx, bson.D{})
	require.NoError(t, err)
	require.NotContains(t, names, run.Collection, "the run's collection is dropped")

	_, err = b.drainOnce(ctx, 1, false)
	require.ErrorIs(t, err, errNoWorkerBinary)
}

func TestLookupFloors(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	queued, err := putMany(ctx, b.st.beanstalkAddr, "t-"+testenv.RandomName(), 20, 2)
	require.NoError(t, err)
	completed, err := burnIDs(ctx, b.st.beanstalkAddr, 20)
	require.NoError(t, err)
	results := store.NewResults(b.st.mongo, b.st.mongoDB, b.st.mongoColl)
	require.NoError(t, importResults(ctx, results, completed, "t"))
	deadline := time.Now().Add(time.Minute)
	cfg := hammerConfig{conc: 4, d: time.Second} // long enough for some operations to finish on a loaded machine

	s, err := hammer(ctx, cfg, statsJobLoops(b.st.beanstalkAddr, queued, deadline))
	require.NoError(t, err)
	require.Positive(t, s.Count)
	require.Zero(t, s.Errors, s.FirstError)

	s, err = hammer(ctx, cfg, findLoops(b.st.beanstalkAddr, results, completed, deadline))
	require.NoError(t, err)
	require.Positive(t, s.Count)
	require.Zero(t, s.Errors, s.FirstError)

	// The completed floor refuses an id beanstalkd knows: it must miss.
	_, err = hammer(ctx, cfg, findLoops(b.st.beanstalkAddr, results, queued, deadline))
	require.ErrorContains(t, err, "want NOT_FOUND")
}

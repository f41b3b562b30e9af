package store_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/jobsys/jobs/pkg/store"
	"github.com/jobsys/jobs/pkg/testenv"
)

// DeleteBefore deletes every document older than the cut, across
// batches, and nothing newer or without the field.
func TestDeleteBefore(t *testing.T) {
	t.Parallel()
	client, db := devmongo.open(t)
	ctx := testenv.Context(t, time.Minute)
	coll := client.Database(db).Collection("sweep_" + testenv.RandomName())
	n := store.SweepBatch + 500
	docs := make([]any, 0, n+2)
	for i := range n {
		at := base.Add(-time.Hour)
		if i%3 == 0 {
			at = base.Add(time.Hour) // fresh
		}
		docs = append(docs, bson.D{{Key: "_id", Value: fmt.Sprintf("k%05d", i)}, {Key: "at", Value: at}})
	}
	docs = append(docs, bson.D{{Key: "_id", Value: "no time"}}, bson.D{{Key: "_id", Value: int64(7)}, {Key: "at", Value: base.Add(-time.Hour)}})
	_, err := coll.InsertMany(ctx, docs)
	require.NoError(t, err)

	deleted, err := store.DeleteBefore(ctx, coll, "at", base)
	require.NoError(t, err)
	require.EqualValues(t, n-(n+2)/3+1, deleted)
	left, err := coll.CountDocuments(ctx, bson.D{})
	require.NoError(t, err)
	require.EqualValues(t, (n+2)/3+1, left)
	old, err := coll.CountDocuments(ctx, bson.D{{Key: "at", Value: bson.D{{Key: "$lt", Value: base}}}})
	require.NoError(t, err)
	require.Zero(t, old)

	deleted, err = store.DeleteBefore(ctx, coll, "at", base)
	require.NoError(t, err)
	require.Zero(t, deleted, "nothing left to delete")
}

// DeleteFirstBefore deletes the expired documents at the start of the
// record order, across batches, and stops at the first that has not
// expired: one behind it is left to DeleteBefore.
func TestDeleteFirstBefore(t *testing.T) {
	t.Parallel()
	client, db := devmongo.open(t)
	ctx := testenv.Context(t, time.Minute)
	coll := client.Database(db).Collection("sweep_" + testenv.RandomName())
	n := store.SweepBatch + 500
	docs := make([]any, 0, n+store.SweepBatch+1)
	for i := range n {
		docs = append(docs, bson.D{{Key: "_id", Value: fmt.Sprintf("k%05d", i)}, {Key: "at", Value: base.Add(-time.Hour)}})
	}
	for i := range store.SweepBatch {
		docs = append(docs, bson.D{{Key: "_id", Value: fmt.Sprintf("f%05d", i)}, {Key: "at", Value: base.Add(time.Hour)}})
	}
	docs = append(docs, bson.D{{Key: "_id", Value: "behind"}, {Key: "at", Value: base.Add(-time.Hour)}})
	_, err := coll.InsertMany(ctx, docs)
	require.NoError(t, err)

	deleted, err := store.DeleteFirstBefore(ctx, coll, "at", base)
	require.NoError(t, err)
	require.EqualValues(t, n, deleted)
	deleted, err = store.DeleteFirstBefore(ctx, coll, "at", base)
	require.NoError(t, err)
	require.Zero(t, deleted, "stops at the fresh one")
	deleted, err = store.DeleteBefore(ctx, coll, "at", base)
	require.NoError(t, err)
	require.EqualValues(t, 1, deleted, "the one behind it")
	left, err := coll.CountDocuments(ctx, bson.D{})
	require.NoError(t, err)
	require.EqualValues(t, store.SweepBatch, left)
}

// A sweep that runs out of time stops on the server too: devmongo's CPU
// after the deadline is a small part of what a whole sweep costs, where
// a DeleteMany, which FerretDB cannot stop, would go on to the end. And
// a sweep from the start of the record order that finds nothing expired
// costs a small part of a whole sweep.
func TestDeleteBeforeStopsAtItsDeadline(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: seeds 10,000 documents")
	}
	t.Parallel()
	m := testenv.StartMongo(t)
	ctx := testenv.Context(t, 2*time.Minute)
	coll := bigNumeric(t, ctx, m, 10_000).Collection()

	c0, start := cpu(t, m.Pid()), time.Now()
	deleted, err := store.DeleteBefore(ctx, coll, "stored_at", base.Add(-time.Hour)) // none is that old
	require.NoError(t, err)
	require.Zero(t, deleted)
	scan, scanCPU := time.Since(start), cpu(t, m.Pid())-c0
	t.Logf("one sweep of 10,000 documents, none expired: %s, %s of devmongo's CPU", scan.Round(time.Millisecond), scanCPU)

	c0 = cpu(t, m.Pid())
	deleted, err = store.DeleteFirstBefore(ctx, coll, "stored_at", base.Add(-time.Hour))
	require.NoError(t, err)
	require.Zero(t, deleted)
	first := cpu(t, m.Pid()) - c0
	t.Logf("DeleteFirstBefore, none expired: %s of devmongo's CPU", first)
	require.Less(t, first, scanCPU/4, "reads a batch, not the collection")

	before := cpu(t, m.Pid())
	qctx, cancel := context.WithTimeout(ctx, scan/10)
	_, err = store.DeleteBefore(qctx, coll, "stored_at", base.Add(-time.Hour))
	cancel()
	require.ErrorIs(t, err, store.ErrUnavailable)
	time.Sleep(scan / 10)
	mid := cpu(t, m.Pid())
	time.Sleep(scan)
	after := cpu(t, m.Pid())
	t.Logf("devmongo CPU: %s in the sweep, %s in the time of a sweep after it", mid-before, after-mid)
	require.Less(t, after-mid, scanCPU/4, "devmongo went on with a sweep no one waits for")
}

// Of processes that share a lease, one runs the chore per period; the
// others find its turn taken. A chore that times out holds the lease
// back for every process, for a back-off that grows, and the first
// success after it clears the count. (The period is long; the test ends
// one by removing its turn.)
func TestLeaseOneRunPerPeriod(t *testing.T) {
	t.Parallel()
	client, db := devmongo.open(t)
	ctx := testenv.Context(t, 30*time.Second)
	coll := client.Database(db).Collection("lease_" + testenv.RandomName())
	leases := make([]*store.Lease, 3)
	for i := range leases {
		leases[i] = store.NewLease(coll, "sweep", fmt.Sprintf("p%d", i))
	}
	var runs atomic.Int32
	chore := func(context.Context) error { runs.Add(1); return nil }
	const every = time.Hour
	var state struct {
		Until    time.Time `bson:"until"`
		Timeouts int       `bson:"timeouts"`
	}
	read := func() {
		require.NoError(t, coll.FindOne(ctx, bson.D{{Key: "_id", Value: "sweep"}}).Decode(&state))
	}
	nextPeriod := func() { // this period's turn was never taken
		_, err := coll.DeleteMany(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$ne", Value: "sweep"}}}})
		require.NoError(t, err)
	}
	runAll := func(timeout time.Duration, chore func(context.Context) error) []bool {
		ran := make([]bool, len(leases))
		for i, l := range leases {
			var err error
			ran[i], err = l.Run(ctx, every, timeout, chore)
			require.NoError(t, err)
		}
		return ran
	}

	// At once: one runs.
	var wg sync.WaitGroup
	for _, l := range leases {
		wg.Go(func() {
			_, err := l.Run(ctx, every, 5*time.Second, chore)
			require.NoError(t, err)
		})
	}
	wg.Wait()
	require.EqualValues(t, 1, runs.Load())
	require.Equal(t, []bool{false, false, false}, runAll(5*time.Second, chore), "the period's turn is taken")

	nextPeriod()
	require.Equal(t, []bool{true, false, false}, runAll(5*time.Second, chore))
	n, err := coll.CountDocuments(ctx, bson.D{})
	require.NoError(t, err)
	require.EqualValues(t, 1, n, "one turn is kept")

	// A chore that times out holds the lease back for two periods, then
	// four.
	slow := func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
	due := func() { // the back-off is over
		_, err := coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: "sweep"}}, bson.D{{Key: "$set", Value: bson.D{{Key: "until", Value: time.Now()}}}})
		require.NoError(t, err)
	}
	for n, periods := range []time.Duration{2, 4} {
		due()
		nextPeriod()
		ran, err := leases[1].Run(ctx, every, 50*time.Millisecond, slow)
		require.True(t, ran)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.ErrorContains(t, err, fmt.Sprintf("%d in a row", n+1))
		read()
		require.Equal(t, n+1, state.Timeouts)
		require.WithinDuration(t, time.Now().Add(periods*every), state.Until, time.Minute)
		nextPeriod()
		require.Equal(t, []bool{false, false, false}, runAll(5*time.Second, chore), "held back for every process")
	}
	due()
	require.Equal(t, []bool{true, false, false}, runAll(5*time.Second, chore), "due after the back-off")
	read()
	require.Zero(t, state.Timeouts, "a success clears the count")
}

// On FerretDB the failure records' expiry that timed out is not sent
// again at once: the next tries delete nothing, as no error, until its
// back-off ends, while Ping says the store is slow.
func TestFailureExpiryBacksOff(t *testing.T) {
	t.Parallel()
	client, db := devmongo.open(t)
	ctx := testenv.Context(t, 30*time.Second)
	s := store.NewResults(client, db, "results_"+testenv.RandomName(), store.WithServer(store.FerretDB))
	f := s.Failures()
	now := time.Now()
	require.NoError(t, f.Record(ctx, failure(1, "a", "buried", now.Add(-2*time.Hour))))

	require.Eventually(t, func() bool {
		ectx, cancel := expired()
		defer cancel()
		require.Error(t, s.DeleteExpired(ectx, now, time.Hour))
		return s.Ping(ctx) != nil
	}, 5*time.Second, 10*time.Millisecond)
	require.ErrorIs(t, s.Ping(ctx), store.ErrSlow)
	require.ErrorContains(t, s.Ping(ctx), "expired failure records")
	require.NoError(t, s.DeleteExpired(ctx, now, time.Hour), "refused: no error")
	_, err := f.Get(ctx, 1)
	require.NoError(t, err, "not deleted while backing off")
	require.Eventually(t, func() bool {
		require.NoError(t, s.DeleteExpired(ctx, now, time.Hour))
		_, err := f.Get(ctx, 1)
		return err != nil
	}, 10*time.Second, 100*time.Millisecond, "deleted once the back-off ends")
	require.NoError(t, s.Ping(ctx))
}

package store_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/store"
	"github.com/jobsys/jobs/pkg/testenv"
)

// keyedStore is a FerretDB-layout store on devmongo, made ready as the
// services make it, and a second store on the same collection: another
// process.
func keyedStore(t *testing.T) (ctx context.Context, a, b *store.Results) {
	t.Helper()
	client, db := devmongo.open(t)
	ctx = testenv.Context(t, 60*time.Second)
	name := "results_" + testenv.RandomName()
	a = store.NewResults(client, db, name, store.WithServer(store.FerretDB))
	b = store.NewResults(client, db, name, store.WithServer(store.FerretDB))
	require.NoError(t, a.EnsureIndexes(ctx))
	require.NoError(t, b.EnsureIndexes(ctx))
	return ctx, a, b
}

// Two processes saving at once, several saves in flight each, within the
// same seconds: every read in stored order sees every result once, in
// (stored_at, _id) order. Each save takes its own stream of a second and
// registers a new one only when none is free, so the journal keeps no
// gaps for a reader to stop at.
func TestJournalConcurrentWriters(t *testing.T) {
	t.Parallel()
	ctx, a, b := keyedStore(t)
	const n = 300
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Go(func() { errs <- s.Save(ctx, result(uint64(i+1), fmt.Sprint(i), base)) })
		if i%50 == 49 {
			wg.Wait() // some saves in later seconds
			time.Sleep(300 * time.Millisecond)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	// Each process's last batches close within a flush; Flush closes them
	// now, as a stopping worker does.
	require.NoError(t, a.Flush(ctx))
	require.NoError(t, b.Flush(ctx))

	for _, s := range []*store.Results{a, b} {
		all, err := s.Latest(ctx, n+10)
		require.NoError(t, err)
		require.Len(t, all, n)
		require.True(t, slices.IsSortedFunc(all, func(x, y job.Result) int {
			return x.StoredAt.Compare(y.StoredAt)*2 + cmpID(x.ID, y.ID)
		}), "stored order")
		got := ids(all)
		slices.Sort(got)
		for i, id := range got {
			require.Equal(t, uint64(i+1), id, "every result once")
		}

		after, err := s.After(ctx, time.Time{}, 0, 0)
		require.NoError(t, err)
		require.Equal(t, ids(all), ids(after), "After from the start is Latest of all")

		// Page through in steps of 7, as a catch-up does.
		var paged []job.Result
		at, id := time.Time{}, uint64(0)
		for {
			page, err := s.After(ctx, at, id, 7)
			require.NoError(t, err)
			if len(page) == 0 {
				break
			}
			paged = append(paged, page...)
			at, id = page[len(page)-1].StoredAt, page[len(page)-1].ID
		}
		require.Equal(t, ids(all), ids(paged))

		count, err := s.CountBetween(ctx, all[0].StoredAt, all[n-1].StoredAt.Add(time.Millisecond))
		require.NoError(t, err)
		require.EqualValues(t, n, count)

		last, err := s.Last(ctx)
		require.NoError(t, err)
		require.Equal(t, all[n-1].ID, last.ID)

		newest, err := s.Before(ctx, "", time.Time{}, 0, 25)
		require.NoError(t, err)
		want := slices.Clone(all[n-25:])
		slices.Reverse(want)
		require.Equal(t, ids(want), ids(newest))
	}
}

func cmpID(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// The journal is what the FerretDB layout reads in stored order by: a
// document written around the store (no entry) is not among the
// newest, while every result the store saved is.
func TestJournalIsWhatIsRead(t *testing.T) {
	t.Parallel()
	ctx, s, _ := keyedStore(t)
	require.NoError(t, s.Save(ctx, result(1, "a", base)))
	require.NoError(t, s.Save(ctx, result(2, "b", base)))
	around := bson.D{{Key: "_id", Value: fmt.Sprintf("%020d", 3)}, {Key: "hash", Value: "h"}, {Key: "payload", Value: "c"},
		{Key: "stored_at", Value: time.Now().Add(time.Minute)}}
	_, err := s.Collection().InsertOne(ctx, around)
	require.NoError(t, err)

	last, err := s.Last(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 2, last.ID, "read by the journal, not by scanning")
	got, err := s.Find(ctx, 3)
	require.NoError(t, err, "lookups by id still find it")
	require.Equal(t, "c", got.Payload)
}

// A keyed collection written before the journal existed reads by
// scanning until EnsureIndexes has journaled every result, and gives
// the same answers after; a result saved meanwhile is read once.
func TestJournalBackfill(t *testing.T) {
	t.Parallel()
	ctx, s, _ := keyedStore(t)
	const n = 120
	rs := make([]job.Result, n)
	for i := range rs {
		rs[i] = result(uint64(i+1), fmt.Sprint(i), base)
		rs[i].StoredAt = base.Add(time.Duration(i*37) * time.Second) // seconds, minutes and hours apart
	}
	_, err := s.Import(ctx, rs)
	require.NoError(t, err)
	want, err := s.Latest(ctx, 50)
	require.NoError(t, err)
	require.Len(t, want, 50)

	// The journal is lost, as in a store written before it.
	require.NoError(t, s.Collection().Database().Collection(s.Collection().Name()+store.OrderSuffix).Drop(ctx))
	old := store.NewResults(s.Collection().Database().Client(), s.Collection().Database().Name(), s.Collection().Name(),
		store.WithServer(store.FerretDB))
	got, err := old.Latest(ctx, 50)
	require.NoError(t, err)
	require.Equal(t, ids(want), ids(got), "scanning before the journal is complete")

	require.NoError(t, old.Save(ctx, result(n+1, "new", base))) // journaled, and backfilled again
	require.NoError(t, old.EnsureIndexes(ctx))
	got, err = old.Latest(ctx, 51)
	require.NoError(t, err)
	require.Equal(t, append(ids(want), n+1), ids(got), "by the journal, once each")
	from := rs[10]
	after, err := old.After(ctx, from.StoredAt, from.ID, 5)
	require.NoError(t, err)
	require.Equal(t, []uint64{12, 13, 14, 15, 16}, ids(after))
}

// A result whose save failed after its entry was written (here: a
// second save of a stored id with other work) is not read twice, nor
// with the stored_at of the failed save.
func TestJournalSkipsEntriesOfFailedSaves(t *testing.T) {
	t.Parallel()
	ctx, s, _ := keyedStore(t)
	require.NoError(t, s.Save(ctx, result(1, "a", base)))
	time.Sleep(5 * time.Millisecond)
	require.ErrorIs(t, s.Save(ctx, result(1, "other", base)), store.ErrConflict)
	require.ErrorIs(t, s.Save(ctx, result(1, "a", base)), store.ErrAlreadyStored)
	all, err := s.Latest(ctx, 10)
	require.NoError(t, err)
	require.Len(t, all, 1)
	stored, err := s.Find(ctx, 1)
	require.NoError(t, err)
	require.True(t, stored.StoredAt.Equal(all[0].StoredAt))
	n, err := s.CountBetween(ctx, time.Time{}, time.Now().Add(time.Hour))
	require.NoError(t, err)
	require.EqualValues(t, 1, n)
}

// Retention on the keyed layout deletes the expired results by the
// journal, with their entries, registrations and the markers of the
// minutes, hours and days that lie wholly before the cut: what is left
// reads as before, and the journal keeps nothing of what expired.
func TestJournalRetention(t *testing.T) {
	t.Parallel()
	ctx, s, _ := keyedStore(t)
	now := time.Now().UTC().Truncate(time.Second)
	const n = 60
	rs := make([]job.Result, n)
	for i := range rs {
		rs[i] = result(uint64(i+1), fmt.Sprint(i), now)
		rs[i].StoredAt = now.Add(-time.Duration(n-i) * 97 * time.Minute) // over days, a result every 97 minutes
	}
	_, err := s.Import(ctx, rs)
	require.NoError(t, err)
	journal := s.Collection().Database().Collection(s.Collection().Name() + store.OrderSuffix)
	before, err := journal.CountDocuments(ctx, bson.D{})
	require.NoError(t, err)

	ttl := 24 * time.Hour
	require.NoError(t, s.DeleteExpired(ctx, now, ttl))
	cut := now.Add(-ttl)
	var kept []uint64
	for _, r := range rs {
		if !r.StoredAt.Before(cut) {
			kept = append(kept, r.ID)
		}
	}
	require.NotEmpty(t, kept)
	require.Less(t, len(kept), n)
	all, err := s.After(ctx, time.Time{}, 0, 0)
	require.NoError(t, err)
	require.Equal(t, kept, ids(all))
	_, err = s.Find(ctx, 1)
	require.ErrorIs(t, err, store.ErrNotFound)
	found, err := s.Find(ctx, kept[0])
	require.NoError(t, err)
	require.Equal(t, kept[0], found.ID)

	after, err := journal.CountDocuments(ctx, bson.D{})
	require.NoError(t, err)
	require.Less(t, after, before)
	// Each expired result had its own second, minute and hour: an entry,
	// a registration and a minute and hour marker each are gone.
	require.LessOrEqual(t, after, before-4*int64(n-len(kept)))
}

// A read never misses a result stored before it: a process reads its
// own open batch from memory, and another process's read waits for the
// batch to close (journal_write.go), as a write on MongoDB is read once
// it has committed.
func TestJournalOtherProcessReadsAStoredResultAtOnce(t *testing.T) {
	t.Parallel()
	ctx, a, b := keyedStore(t)
	for i := range 20 {
		require.NoError(t, a.Save(ctx, result(uint64(i+1), "a", base)))
		last, err := a.Last(ctx)
		require.NoError(t, err)
		require.EqualValues(t, i+1, last.ID, "the writer reads its own save")
		last, err = b.Last(ctx)
		require.NoError(t, err)
		require.EqualValues(t, i+1, last.ID, "another process reads it at once")
	}
}

// A writer that dies leaves its batch's document open. Once its second
// is older than a minute, a reader reads that second's results by
// scanning, and closes the document with them: the next read finds them
// in the journal.
func TestJournalRepairsABatchLeftOpen(t *testing.T) {
	t.Parallel()
	ctx, s, _ := keyedStore(t)
	at := time.Now().Add(-2 * time.Minute).UTC().Truncate(time.Second)
	first := result(1, "a", base)
	first.StoredAt = at
	_, err := s.Import(ctx, []job.Result{first}) // the second's stream, markers and a closed document
	require.NoError(t, err)

	// The dead writer's open batch, next in the stream, and its result.
	journal := s.Collection().Database().Collection(s.Collection().Name() + store.OrderSuffix)
	open := fmt.Sprintf("e%011d.0000.000001", at.Unix())
	_, err = journal.InsertOne(ctx, bson.D{{Key: "_id", Value: open}, {Key: "open", Value: true}})
	require.NoError(t, err)
	lost := result(2, "b", base)
	lost.StoredAt = at.Add(300 * time.Millisecond)
	raw, err := bson.Marshal(lost)
	require.NoError(t, err)
	var doc bson.D
	require.NoError(t, bson.Unmarshal(raw, &doc))
	doc[0] = bson.E{Key: "_id", Value: fmt.Sprintf("%020d", 2)}
	_, err = s.Collection().InsertOne(ctx, doc)
	require.NoError(t, err)

	other := store.NewResults(s.Collection().Database().Client(), s.Collection().Database().Name(), s.Collection().Name(),
		store.WithServer(store.FerretDB))
	all, err := other.After(ctx, time.Time{}, 0, 0)
	require.NoError(t, err)
	require.Equal(t, []uint64{1, 2}, ids(all), "the lost entry is read by the repair")
	var closed bson.M
	require.NoError(t, journal.FindOne(ctx, bson.D{{Key: "_id", Value: open}}).Decode(&closed))
	require.NotContains(t, closed, "open", "the repair closed the batch")
	require.Len(t, closed["es"], 2, "with the second's results")
	again, err := other.Latest(ctx, 10)
	require.NoError(t, err)
	require.Equal(t, []uint64{1, 2}, ids(again))
}

// A process remembers the next free stream slot of at most
// MaxJournalHints seconds: an import spread over more seconds does not
// grow it further.
func TestJournalHintsAreBounded(t *testing.T) {
	t.Parallel()
	ctx, s, _ := keyedStore(t)
	rs := make([]job.Result, store.MaxJournalHints+500)
	for i := range rs {
		rs[i] = result(uint64(i+1), "p", base)
		rs[i].StoredAt = base.Add(time.Duration(i) * time.Second)
	}
	_, err := s.Import(ctx, rs)
	require.NoError(t, err)
	require.LessOrEqual(t, store.JournalHints(s), store.MaxJournalHints+1)
	all, err := s.After(ctx, time.Time{}, 0, 0)
	require.NoError(t, err)
	require.Len(t, all, len(rs))
}

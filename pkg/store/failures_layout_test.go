package store_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/store"
	"github.com/jobsys/jobs/pkg/testenv"
)

func init() {
	contract = append(contract, []struct {
		name string
		run  func(t *testing.T, b bundle)
	}{
		{"FailureConcurrentFirstRecords", testFailureConcurrentFirst},
		{"FailureListTiesAcrossDigitCounts", testFailureDigitCounts},
	}...)
}

// Records of one job written at once, none there before, leave one
// record and no error (a write that loses the race to insert compares
// with the winner's record instead).
func testFailureConcurrentFirst(t *testing.T, b bundle) {
	f := b.failures(t)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() { errs[i] = f.Record(b.ctx, failure(5, "a", job.FailureRetrying, base)) })
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	n, err := f.Collection().CountDocuments(b.ctx, bson.D{})
	require.NoError(t, err)
	require.EqualValues(t, 1, n)
	got, err := f.Get(b.ctx, 5)
	require.NoError(t, err)
	require.Equal(t, failure(5, "a", job.FailureRetrying, base), got)
}

// Ids of different lengths that failed in the same millisecond list and
// page in id order, on either layout (FerretDB's keys are zero-padded).
func testFailureDigitCounts(t *testing.T, b bundle) {
	f := b.failures(t)
	for _, id := range []uint64{9, 1000, 10, 100, 1 << 40} {
		b.record(t, f, failure(id, "a", job.FailureBuried, base))
	}
	var seen []uint64
	var after job.Cursor
	for range 10 {
		page, next, err := f.List(b.ctx, store.FailureQuery{State: job.FailureBuried, Limit: 2, After: after})
		require.NoError(t, err)
		seen = append(seen, failureIDs(page)...)
		if next == "" {
			break
		}
		after = next
	}
	require.Equal(t, []uint64{1 << 40, 1000, 100, 10, 9}, seen)
}

// filterLog records the filters of the commands a client sends to one
// collection: find's filter, and each update and delete statement's q.
type filterLog struct {
	coll string
	mu   sync.Mutex
	seen []bson.Raw
}

func (l *filterLog) started(_ context.Context, e *event.CommandStartedEvent) {
	name, _ := e.Command.Lookup(e.CommandName).StringValueOK()
	if name != l.coll {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch e.CommandName {
	case "find":
		l.seen = append(l.seen, e.Command.Lookup("filter").Document())
	case "update", "delete":
		field := map[string]string{"update": "updates", "delete": "deletes"}[e.CommandName]
		vals, _ := e.Command.Lookup(field).Array().Values()
		for _, v := range vals {
			l.seen = append(l.seen, v.Document().Lookup("q").Document())
		}
	}
}

func (l *filterLog) take() []bson.Raw {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.seen
	l.seen = nil
	return out
}

// On FerretDB every per-job operation on failure records (Record, Get,
// Remove, marking kicked by id) sends only queries whose filter is
// exactly {_id: <string key>}, the one filter FerretDB hands SQLite and
// devmongo answers from its index; the records are stored under those
// keys and read back as their numbers.
func TestFerretDBFailuresByKey(t *testing.T) {
	t.Parallel()
	tb := testenv.Setup(t)
	ctx := testenv.Context(t, 30*time.Second)
	coll := "results_" + testenv.RandomName()
	log := &filterLog{coll: coll + store.FailuresSuffix}
	client, err := mongo.Connect(options.Client().ApplyURI(tb.Mongo.URL).SetMonitor(&event.CommandMonitor{Started: log.started}))
	require.NoError(t, err)
	t.Cleanup(func() { _ = client.Disconnect(context.Background()) })
	f := store.NewResults(client, tb.DB, coll, store.WithServer(store.FerretDB)).Failures()

	onlyByKey := func(what string) {
		t.Helper()
		filters := log.take()
		require.NotEmpty(t, filters, what)
		for _, q := range filters {
			elems, err := q.Elements()
			require.NoError(t, err)
			require.Len(t, elems, 1, "%s: filter %s", what, q)
			require.Equal(t, "_id", elems[0].Key(), "%s: filter %s", what, q)
			require.Equal(t, bson.TypeString, elems[0].Value().Type, "%s: filter %s", what, q)
		}
	}
	_, err = f.Get(ctx, 1) // an empty collection: its layout is read first
	require.ErrorIs(t, err, store.ErrNoFailure)
	log.take()

	r := failure(7, "a", job.FailureRetrying, base)
	require.NoError(t, f.Record(ctx, r))
	onlyByKey("Record, first")
	r.Attempts, r.State = 2, job.FailureBuried
	require.NoError(t, f.Record(ctx, r))
	onlyByKey("Record, again")
	late := failure(7, "a", job.FailureRetrying, base)
	require.NoError(t, f.Record(ctx, late))
	onlyByKey("Record, an earlier attempt late")
	got, err := f.Get(ctx, 7)
	require.NoError(t, err)
	require.Equal(t, r, got)
	onlyByKey("Get")
	n, err := f.KickedBefore(ctx, base.Add(time.Hour), base.Add(time.Hour), "", 0, 7, 8)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	onlyByKey("KickedBefore by ids")
	n, err = f.Kicked(ctx, base.Add(time.Hour), 7)
	require.NoError(t, err)
	require.Zero(t, n, "kicked already")
	onlyByKey("Kicked")

	var stored bson.Raw
	require.NoError(t, f.Collection().FindOne(ctx, bson.D{}).Decode(&stored))
	require.Equal(t, "00000000000000000007", stored.Lookup("_id").StringValue())
	log.take()

	require.NoError(t, f.Remove(ctx, 7))
	onlyByKey("Remove")
	_, err = f.Get(ctx, 7)
	require.ErrorIs(t, err, store.ErrNoFailure)
}

// A FerretDB collection of failure records written with numeric ids
// (before the keyed layout) keeps them: every operation finds old and
// new records, what is written stays numeric, and the lists page as
// before.
func TestFerretDBFailuresKeepNumericIDs(t *testing.T) {
	t.Parallel()
	client, db := devmongo.open(t)
	ctx := testenv.Context(t, 30*time.Second)
	coll := "results_" + testenv.RandomName()
	old := client.Database(db).Collection(coll + store.FailuresSuffix)
	for id := range uint64(5) {
		_, err := old.InsertOne(ctx, failure(id+1, "a", job.FailureBuried, base.Add(time.Duration(id/2)*time.Second)))
		require.NoError(t, err)
	}
	// Results keyed (an empty results collection) do not change that.
	s := store.NewResults(client, db, coll, store.WithServer(store.FerretDB))
	require.NoError(t, s.Save(ctx, result(100, "p", base)))
	f := s.Failures()

	got, err := f.Get(ctx, 3)
	require.NoError(t, err)
	require.Equal(t, failure(3, "a", job.FailureBuried, base.Add(time.Second)), got)
	later := failure(3, "a", job.FailureBuried, base.Add(time.Second))
	later.Attempts = 2
	require.NoError(t, f.Record(ctx, later))
	require.NoError(t, f.Record(ctx, failure(3, "a", job.FailureRetrying, base)), "an earlier attempt's, late")
	got, err = f.Get(ctx, 3)
	require.NoError(t, err)
	require.Equal(t, later, got)
	require.NoError(t, f.Record(ctx, failure(6, "a", job.FailureBuried, base.Add(3*time.Second))))

	var seen []uint64
	var after job.Cursor
	for range 10 {
		page, next, err := f.List(ctx, store.FailureQuery{State: job.FailureBuried, Tube: "a", Limit: 2, After: after})
		require.NoError(t, err)
		seen = append(seen, failureIDs(page)...)
		if next == "" {
			break
		}
		after = next
	}
	require.Equal(t, []uint64{6, 5, 4, 3, 2, 1}, seen)

	kick := base.Add(time.Hour)
	n, err := f.KickedBefore(ctx, kick, kick, "a", 2)
	require.NoError(t, err)
	require.Equal(t, 2, n, "the two longest buried")
	n, err = f.KickedBefore(ctx, kick, kick, "", 0, 1, 2, 5)
	require.NoError(t, err)
	require.Equal(t, 1, n, "5: 1 and 2 were kicked already")
	require.NoError(t, f.Remove(ctx, 1))
	_, err = f.Get(ctx, 1)
	require.ErrorIs(t, err, store.ErrNoFailure)

	cur, err := old.Find(ctx, bson.D{})
	require.NoError(t, err)
	var ids []bson.RawValue
	for cur.Next(ctx) {
		ids = append(ids, cur.Current.Lookup("_id"))
	}
	require.Len(t, ids, 5)
	for _, id := range ids {
		require.Equal(t, bson.TypeInt64, id.Type, "ids stay numbers")
	}
}

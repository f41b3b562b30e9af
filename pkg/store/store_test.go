package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/store"
	"github.com/jobsys/jobs/pkg/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func setup(t *testing.T) (*store.Results, context.Context) {
	t.Helper()
	b := testenv.Setup(t)
	client, err := store.Connect(b.Mongo.URL, "store-test", 2*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { _ = client.Disconnect(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	s := store.NewResults(client, b.DB, "completed")
	require.NoError(t, s.EnsureIndexes(ctx))
	return s, ctx
}

func result(id uint64, payload string, at time.Time) job.Result {
	return job.Result{ID: id, Hash: job.Hash(payload), Payload: payload, Tube: "default", Worker: "w1", Attempts: 1,
		StartedAt: at.Add(-time.Millisecond), CompletedAt: at, DurationMS: 1}
}

func TestSaveFindNeverOverwrites(t *testing.T) {
	t.Parallel()
	s, ctx := setup(t)
	at := time.UnixMilli(1_700_000_000_000).UTC()
	r := result(1, `{"example":"data"}`, at)
	before := time.Now().Add(-time.Minute)
	require.NoError(t, s.Save(ctx, r))

	got, err := s.Find(ctx, 1)
	require.NoError(t, err)
	require.True(t, got.StoredAt.After(before), "stored_at is stamped at the insert: %s", got.StoredAt)
	r.StoredAt = got.StoredAt
	require.Equal(t, r, got)

	// The same job again: reported, not duplicated.
	again := r
	again.Worker, again.Attempts = "w2", 2
	require.ErrorIs(t, s.Save(ctx, again), store.ErrAlreadyStored)

	// A different job under the same id: refused, stored one unchanged.
	require.ErrorIs(t, s.Save(ctx, result(1, `{"other":1}`, at)), store.ErrConflict)
	got, err = s.Find(ctx, 1)
	require.NoError(t, err)
	require.Equal(t, r, got)

	_, err = s.Find(ctx, 2)
	require.ErrorIs(t, err, store.ErrNotFound)
}

// FindMany answers many ids with one query: the stored ones, each with
// its own result, and nothing for the others.
func TestFindMany(t *testing.T) {
	t.Parallel()
	s, ctx := setup(t)
	at := time.UnixMilli(1_700_000_000_000).UTC()
	want := map[uint64]job.Result{}
	for _, id := range []uint64{2, 7, 40} {
		require.NoError(t, s.Save(ctx, result(id, fmt.Sprintf(`{"n":%d}`, id), at)))
		got, err := s.Find(ctx, id)
		require.NoError(t, err)
		want[id] = got
	}

	got, err := s.FindMany(ctx, []uint64{40, 3, 2, 7, 1 << 40})
	require.NoError(t, err)
	require.Equal(t, want, got)

	got, err = s.FindMany(ctx, []uint64{3})
	require.NoError(t, err)
	require.Empty(t, got)

	got, err = s.FindMany(ctx, nil)
	require.NoError(t, err)
	require.Empty(t, got)
}

func TestMaxIDAndAfter(t *testing.T) {
	t.Parallel()
	s, ctx := setup(t)
	n, err := s.MaxID(ctx)
	require.NoError(t, err)
	require.Zero(t, n)

	base := time.UnixMilli(1_700_000_000_000).UTC()
	// Stored in this order, whatever their ids and completion times.
	stored := map[uint64]job.Result{}
	for _, r := range []job.Result{
		result(5, "a", base.Add(time.Hour)),
		result(3, "b", base),
		result(4, "c", base.Add(time.Minute)),
		result(9, "d", base.Add(-time.Hour)),
	} {
		require.NoError(t, s.Save(ctx, r))
		got, err := s.Find(ctx, r.ID)
		require.NoError(t, err)
		stored[r.ID] = got
		time.Sleep(2 * time.Millisecond) // distinct stamps: within one millisecond the id orders
	}
	n, err = s.MaxID(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 9, n)

	ids := func(rs []job.Result) []uint64 {
		var out []uint64
		for _, r := range rs {
			out = append(out, r.ID)
		}
		return out
	}
	all, err := s.After(ctx, time.Time{}, 0, 0)
	require.NoError(t, err)
	require.Equal(t, []uint64{5, 3, 4, 9}, ids(all))

	rest, err := s.After(ctx, stored[3].StoredAt, 3, 0)
	require.NoError(t, err)
	require.Equal(t, []uint64{4, 9}, ids(rest))

	one, err := s.After(ctx, stored[5].StoredAt, 5, 1)
	require.NoError(t, err)
	require.Equal(t, []uint64{3}, ids(one))

	// At the same stamp the id decides: a cursor at 4's stamp with a
	// smaller id returns 4 first.
	same, err := s.After(ctx, stored[4].StoredAt, 0, 1)
	require.NoError(t, err)
	require.Equal(t, []uint64{4}, ids(same))
}

func TestUnavailable(t *testing.T) {
	t.Parallel()
	m := testenv.StartMongo(t)
	client, err := store.Connect(m.URL, "store-test", 500*time.Millisecond)
	require.NoError(t, err)
	defer client.Disconnect(context.Background())
	s := store.NewResults(client, "db", "completed")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, s.Ping(ctx))

	m.Stop()
	start := time.Now()
	_, err = s.Find(ctx, 1)
	require.ErrorIs(t, err, store.ErrUnavailable)
	require.Less(t, time.Since(start), 2*time.Second)
	_, err = s.FindMany(ctx, []uint64{1, 2})
	require.ErrorIs(t, err, store.ErrUnavailable)

	require.NoError(t, m.Restart())
	require.Eventually(t, func() bool { return s.Ping(ctx) == nil }, 10*time.Second, 100*time.Millisecond)
}

// EnsureIndexes runs at every start of every worker and notifier, often at
// the same time, on a collection that has data. On FerretDB it creates
// nothing; what it does on MongoDB runs here too, through CreateIndexes.
func TestEnsureIndexesAgainAndConcurrently(t *testing.T) {
	t.Parallel()
	b := testenv.Setup(t)
	client, err := store.Connect(b.Mongo.URL, "store-test", 2*time.Second)
	require.NoError(t, err)
	defer client.Disconnect(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s := store.NewResults(client, b.DB, "fresh")
	require.NoError(t, s.Save(ctx, result(1, "a", time.Now())))
	names := func() []string {
		specs, err := s.Collection().Indexes().ListSpecifications(ctx)
		require.NoError(t, err)
		var names []string
		for _, spec := range specs {
			names = append(names, spec.Name)
		}
		return names
	}
	require.NoError(t, s.EnsureIndexes(ctx))
	require.Equal(t, []string{"_id_"}, names(), "FerretDB: no index it cannot use")

	for _, create := range []func(context.Context) error{s.EnsureIndexes, func(ctx context.Context) error { return store.CreateIndexes(s, ctx) }} {
		errs := make(chan error, 4)
		for range 4 {
			go func() { errs <- create(ctx) }()
		}
		for range 4 {
			require.NoError(t, <-errs)
		}
		require.NoError(t, create(ctx))
	}
	require.ElementsMatch(t, []string{"_id_", "stored_at_id", "completed_at"}, names())
}

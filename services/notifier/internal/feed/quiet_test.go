package feed_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/store"
	"github.com/jobsys/jobs/pkg/testenv"

	"github.com/jobsys/jobs/services/notifier/internal/feed"
)

// On FerretDB, which counts its results cheaply, a poll round whose count
// has not moved reads nothing: an idle feed stops scanning the collection.
// A new result is read by the next round; a late one by the next sweep; one
// that a delete hides from the count within maxQuiet.
func TestQuietRoundsReadNothing(t *testing.T) {
	t.Parallel()
	rs, ctx := setup(t).results, testenv.Context(t, 20*time.Second)
	counted := &countingStore{Store: rs}
	got := map[uint64]int{}
	sink := func(_ context.Context, batch []job.Result) {
		for _, r := range batch {
			got[r.ID]++
		}
	}
	// Started 5s ago: the sweep looks no further back than the start.
	p := feed.NewPoller(counted, 100*time.Millisecond, 10*time.Second, 50*time.Millisecond, 400*time.Millisecond, time.Now().Add(-5*time.Second))
	reads := 0 // rounds that read the collection
	round := func() {
		t.Helper()
		before := counted.afters
		require.NoError(t, p.Round(ctx, sink))
		if counted.afters > before {
			reads++
		}
	}
	rounds := func(n int) {
		t.Helper()
		for range n {
			round()
			time.Sleep(5 * time.Millisecond)
		}
	}

	rounds(20)
	require.Equal(t, 1, reads, "an idle collection is read once")

	now := time.Now()
	require.NoError(t, insert(ctx, rs, result(10, now)))
	rounds(1)
	require.Equal(t, 2, reads)
	require.Equal(t, map[uint64]int{10: 1}, got)

	// Committed 800ms after its stamp: the lookback misses it, and rounds
	// go on reading until a sweep has looked.
	require.NoError(t, insert(ctx, rs, result(9, now.Add(-800*time.Millisecond))))
	rounds(20)
	require.Equal(t, map[uint64]int{10: 1, 9: 1}, got)
	quiet := reads
	rounds(20)
	require.Equal(t, quiet, reads, "quiet again")

	// A delete and an insert keep the count: the new result waits for
	// maxQuiet to pass since the last read.
	_, err := rs.Collection().DeleteOne(ctx, map[string]any{"_id": 9})
	require.NoError(t, err)
	require.NoError(t, insert(ctx, rs, result(11, time.Now())))
	require.Eventually(t, func() bool {
		round()
		return got[11] == 1
	}, 2*time.Second, 10*time.Millisecond)
	require.Equal(t, map[uint64]int{10: 1, 9: 1, 11: 1}, got)
}

// A server that cannot count cheaply (MongoDB, where the poll reads an
// index) is read every round.
func TestRoundsReadEveryTimeWithoutACheapCount(t *testing.T) {
	t.Parallel()
	counted, ctx := &countingStore{Store: noQuickCount{setup(t).results}}, testenv.Context(t, 20*time.Second)
	p := feed.NewPoller(counted, 100*time.Millisecond, 10*time.Second, 50*time.Millisecond, 5*time.Second, time.Now())
	for i := range 5 {
		before := counted.afters
		require.NoError(t, p.Round(ctx, func(context.Context, []job.Result) {}))
		require.Greater(t, counted.afters, before, "round %d read nothing", i)
	}
}

type noQuickCount struct{ *store.Results }

func (noQuickCount) QuickCount(context.Context) (int64, bool, error) { return 0, false, nil }

// countingStore counts the poll queries (After) made through it.
type countingStore struct {
	feed.Store
	afters int
}

func (s *countingStore) After(ctx context.Context, at time.Time, id uint64, limit int) ([]job.Result, error) {
	s.afters++
	return s.Store.After(ctx, at, id, limit)
}

package feed

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/store"
	"github.com/jobsys/jobs/pkg/testenv"
)

// On FerretDB, which counts its results cheaply, a poll round whose count
// has not moved reads nothing: an idle feed stops scanning the collection.
// A new result is read by the next round; a late one by the next sweep; one
// that a delete hides from the count within maxQuiet.
func TestQuietRoundsReadNothing(t *testing.T) {
	t.Parallel()
	rs, ctx := quietSetup(t)
	got := map[uint64]int{}
	sink := func(_ context.Context, batch []job.Result) {
		for _, r := range batch {
			got[r.ID]++
		}
	}
	// Started 5s ago: the sweep looks no further back than the start.
	p := newPoller(rs, 100*time.Millisecond, 10*time.Second, 50*time.Millisecond, position{at: time.Now().Add(-5 * time.Second)}, slog.New(slog.DiscardHandler))
	p.maxQuiet = 400 * time.Millisecond
	rounds := func(n int) {
		t.Helper()
		for range n {
			require.NoError(t, p.round(ctx, sink))
			time.Sleep(5 * time.Millisecond)
		}
	}

	rounds(20)
	require.Equal(t, 1, p.reads, "an idle collection is read once")

	now := time.Now()
	require.NoError(t, insertResult(ctx, rs, quietResult(10, now)))
	rounds(1)
	require.Equal(t, 2, p.reads)
	require.Equal(t, map[uint64]int{10: 1}, got)

	// Committed 800ms after its stamp: the lookback misses it, and rounds
	// go on reading until a sweep has looked.
	require.NoError(t, insertResult(ctx, rs, quietResult(9, now.Add(-800*time.Millisecond))))
	rounds(20)
	require.Equal(t, map[uint64]int{10: 1, 9: 1}, got)
	reads := p.reads
	rounds(20)
	require.Equal(t, reads, p.reads, "quiet again")

	// A delete and an insert keep the count: the new result waits for
	// maxQuiet to pass since the last read.
	_, err := rs.Collection().DeleteOne(ctx, map[string]any{"_id": 9})
	require.NoError(t, err)
	require.NoError(t, insertResult(ctx, rs, quietResult(11, time.Now())))
	require.Eventually(t, func() bool {
		require.NoError(t, p.round(ctx, sink))
		return got[11] == 1
	}, 2*time.Second, 10*time.Millisecond)
	require.Equal(t, map[uint64]int{10: 1, 9: 1, 11: 1}, got)
}

// A server that cannot count cheaply (MongoDB, where the poll reads an
// index) is read every round.
func TestRoundsReadEveryTimeWithoutACheapCount(t *testing.T) {
	t.Parallel()
	rs, ctx := quietSetup(t)
	p := newPoller(noQuickCount{rs}, 100*time.Millisecond, 10*time.Second, 50*time.Millisecond, position{at: time.Now()}, slog.New(slog.DiscardHandler))
	for range 5 {
		require.NoError(t, p.round(ctx, func(context.Context, []job.Result) {}))
	}
	require.Equal(t, 5, p.reads)
}

type noQuickCount struct{ *store.Results }

func (noQuickCount) QuickCount(context.Context) (int64, bool, error) { return 0, false, nil }

func quietSetup(t *testing.T) (*store.Results, context.Context) {
	t.Helper()
	b := testenv.Setup(t)
	client, err := store.Connect(b.Mongo.URL, "feed-test", 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { _ = client.Disconnect(context.Background()) })
	return store.NewResults(client, b.DB, "completed"), testenv.Context(t, 20*time.Second)
}

func quietResult(id uint64, at time.Time) job.Result {
	p := fmt.Sprintf(`{"n":%d}`, id)
	at = at.Truncate(time.Millisecond).UTC()
	return job.Result{ID: id, Hash: job.Hash(p), Payload: p, Tube: "default", Worker: "test", Attempts: 1,
		StartedAt: at.Add(-time.Millisecond), CompletedAt: at, DurationMS: 1, StoredAt: at}
}

func insertResult(ctx context.Context, rs *store.Results, r job.Result) error {
	_, err := rs.Collection().InsertOne(ctx, r)
	return err
}

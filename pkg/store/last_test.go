package store_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/store"
)

func TestLast(t *testing.T) {
	t.Parallel()
	s, ctx := setup(t)
	_, err := s.Last(ctx)
	require.ErrorIs(t, err, store.ErrNotFound)

	base := time.UnixMilli(1_700_000_000_000).UTC()
	// The last stored, not the largest id nor the latest completed_at.
	require.NoError(t, s.Save(ctx, result(9, "a", base.Add(time.Hour))))
	require.NoError(t, s.Save(ctx, result(3, "b", base.Add(time.Millisecond))))
	require.NoError(t, s.Save(ctx, result(4, "c", base)))
	got, err := s.Last(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 4, got.ID)
}

func TestCountBetween(t *testing.T) {
	t.Parallel()
	s, ctx := setup(t)
	base := time.UnixMilli(1_700_000_000_000).UTC()
	var stored []time.Time
	for i, id := range []uint64{4, 2, 9, 1} {
		require.NoError(t, s.Save(ctx, result(id, "p", base.Add(time.Duration(i)*time.Second))))
		r, err := s.Find(ctx, id)
		require.NoError(t, err)
		stored = append(stored, r.StoredAt)
		time.Sleep(2 * time.Millisecond) // distinct stamps
	}
	ms := time.Millisecond
	for _, tc := range []struct {
		from, to time.Time
		want     int64
	}{
		{stored[0], stored[3].Add(ms), 4},
		{stored[0], stored[3], 3},      // to is excluded
		{base, base.Add(time.Hour), 0}, // completed_at does not count
	} {
		n, err := s.CountBetween(ctx, tc.from, tc.to)
		require.NoError(t, err)
		require.Equal(t, tc.want, n, "%s..%s", tc.from, tc.to)
	}
}

// On FerretDB QuickCount counts exactly, before the collection exists and
// as results are added and removed.
func TestQuickCount(t *testing.T) {
	t.Parallel()
	s, ctx := setup(t)
	n, ok, err := s.QuickCount(ctx)
	require.NoError(t, err)
	require.True(t, ok, "FerretDB counts cheaply")
	require.Zero(t, n, "no collection yet")
	for i := range 5 {
		require.NoError(t, s.Save(ctx, result(uint64(10+i), "p", time.Now())))
		n, ok, err = s.QuickCount(ctx)
		require.NoError(t, err)
		require.True(t, ok)
		require.EqualValues(t, i+1, n)
	}
	_, err = s.Collection().DeleteOne(ctx, map[string]any{"_id": 12})
	require.NoError(t, err)
	n, _, err = s.QuickCount(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 4, n)
}

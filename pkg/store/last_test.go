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
	// The largest id is not the latest completion; two share the last millisecond.
	require.NoError(t, s.Save(ctx, result(9, "a", base)))
	require.NoError(t, s.Save(ctx, result(3, "b", base.Add(time.Millisecond))))
	require.NoError(t, s.Save(ctx, result(4, "c", base.Add(time.Millisecond))))
	got, err := s.Last(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 4, got.ID)
	require.Equal(t, base.Add(time.Millisecond), got.CompletedAt)
}

func TestCountBetween(t *testing.T) {
	t.Parallel()
	s, ctx := setup(t)
	base := time.UnixMilli(1_700_000_000_000).UTC()
	for i, id := range []uint64{4, 2, 9, 1} {
		require.NoError(t, s.Save(ctx, result(id, "p", base.Add(time.Duration(i)*time.Second))))
	}
	for _, tc := range []struct {
		from, to time.Duration
		want     int64
	}{
		{0, 4 * time.Second, 4},
		{0, 3 * time.Second, 3}, // to is excluded
		{time.Second, 2 * time.Second, 1},
		{5 * time.Second, 9 * time.Second, 0},
	} {
		n, err := s.CountBetween(ctx, base.Add(tc.from), base.Add(tc.to))
		require.NoError(t, err)
		require.Equal(t, tc.want, n, "%s..%s", tc.from, tc.to)
	}
}

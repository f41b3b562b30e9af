package store_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/store"
)

// Last is the last stored, not the largest id nor the latest
// completed_at. A contract case: see TestContract.
func testLast(t *testing.T, b bundle) {
	_, err := b.s.Last(b.ctx)
	require.ErrorIs(t, err, store.ErrNotFound)
	b.saveApart(t,
		result(9, "a", base.Add(time.Hour)),
		result(3, "b", base.Add(time.Millisecond)),
		result(4, "c", base),
	)
	got, err := b.s.Last(b.ctx)
	require.NoError(t, err)
	require.EqualValues(t, 4, got.ID)
}

// CountBetween counts by stored time in [from, to). A contract case.
func testCountBetween(t *testing.T, b bundle) {
	var stored []time.Time
	for i, r := range b.saveApart(t,
		result(4, "p", base),
		result(2, "p", base.Add(time.Second)),
		result(9, "p", base.Add(2*time.Second)),
		result(1, "p", base.Add(3*time.Second)),
	) {
		require.EqualValues(t, []uint64{4, 2, 9, 1}[i], r.ID)
		stored = append(stored, r.StoredAt)
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
		n, err := b.s.CountBetween(b.ctx, tc.from, tc.to)
		require.NoError(t, err)
		require.Equal(t, tc.want, n, "%s..%s", tc.from, tc.to)
	}
}

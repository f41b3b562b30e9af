package store_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Latest returns the n last stored, oldest first, in stored order: not
// by id nor by completed_at. A contract case: see TestContract.
func testLatest(t *testing.T, b bundle) {
	got, err := b.s.Latest(b.ctx, 3)
	require.NoError(t, err)
	require.Empty(t, got)

	for i, id := range []uint64{9, 3, 7, 1, 5} {
		b.saveApart(t, result(id, "p", base.Add(-time.Duration(i)*time.Hour)))
	}
	latest := func(n int) []uint64 {
		rs, err := b.s.Latest(b.ctx, n)
		require.NoError(t, err)
		return ids(rs)
	}
	require.Equal(t, []uint64{7, 1, 5}, latest(3))
	require.Equal(t, []uint64{9, 3, 7, 1, 5}, latest(10), "all there is")
	require.Equal(t, []uint64{5}, latest(1))
	require.Empty(t, latest(0))
}

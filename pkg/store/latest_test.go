package store_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Latest returns the n last stored, oldest first, in stored order: not
// by id nor by completed_at.
func TestLatest(t *testing.T) {
	t.Parallel()
	s, ctx := setup(t)
	got, err := s.Latest(ctx, 3)
	require.NoError(t, err)
	require.Empty(t, got)

	base := time.UnixMilli(1_700_000_000_000).UTC()
	for i, id := range []uint64{9, 3, 7, 1, 5} {
		require.NoError(t, s.Save(ctx, result(id, "p", base.Add(-time.Duration(i)*time.Hour))))
		time.Sleep(2 * time.Millisecond) // distinct stamps
	}
	ids := func(n int) []uint64 {
		rs, err := s.Latest(ctx, n)
		require.NoError(t, err)
		out := make([]uint64, len(rs))
		for i, r := range rs {
			out[i] = r.ID
		}
		return out
	}
	require.Equal(t, []uint64{7, 1, 5}, ids(3))
	require.Equal(t, []uint64{9, 3, 7, 1, 5}, ids(10), "all there is")
	require.Equal(t, []uint64{5}, ids(1))
	require.Empty(t, ids(0))
}

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

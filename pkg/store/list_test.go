package store_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/job"
)

// Before pages through the results newest first in stored order, by tube
// or all, and Total counts them. A contract case: see TestContract.
func testBeforeAndTotal(t *testing.T, b bundle) {
	got, err := b.s.Before(b.ctx, "", time.Time{}, 0, 10)
	require.NoError(t, err)
	require.Empty(t, got)

	var saved []job.Result
	for i, id := range []uint64{9, 3, 7, 1, 5} {
		r := result(id, "p", base.Add(-time.Duration(i)*time.Hour))
		if id == 3 || id == 1 {
			r.Tube = "other"
		}
		saved = append(saved, b.saveApart(t, r)...)
	}
	page := func(tube string, after job.Result, n int) []uint64 {
		rs, err := b.s.Before(b.ctx, tube, after.StoredAt, after.ID, n)
		require.NoError(t, err)
		return ids(rs)
	}
	require.Equal(t, []uint64{5, 1}, page("", job.Result{}, 2), "newest stored first")
	require.Equal(t, []uint64{7, 3}, page("", saved[3], 2), "the next page starts after the cursor")
	require.Equal(t, []uint64{9}, page("", saved[1], 2))
	require.Equal(t, []uint64{1, 3}, page("other", job.Result{}, 10), "one tube's")
	require.Equal(t, []uint64{5, 7, 9}, page("default", job.Result{}, 0), "no limit: all")

	n, err := b.s.Total(b.ctx)
	require.NoError(t, err)
	require.Equal(t, int64(5), n)
}

// KickedBefore marks the records a kick moved, and not one that failed
// again after the kick began. A contract case: see TestContract.
func testKickedBefore(t *testing.T, b bundle) {
	f := b.s.Failures()
	rec := func(id uint64, tube string, at time.Time) {
		require.NoError(t, f.Record(b.ctx, job.Failure{ID: id, Tube: tube, State: job.FailureBuried, Payload: "p", Error: "e", Attempts: 1, Worker: "w", FailedAt: at}))
	}
	kick := base.Add(time.Hour)
	rec(1, "a", base)
	rec(2, "a", base.Add(time.Minute))
	rec(3, "a", kick.Add(time.Second)) // kicked, and buried again since
	rec(4, "b", base)
	n, err := f.KickedBefore(b.ctx, kick, kick.Add(2*time.Second), "a", 1)
	require.NoError(t, err)
	require.Equal(t, 1, n, "the longest buried")
	state := func(id uint64) job.FailureState {
		r, err := f.Get(b.ctx, id)
		require.NoError(t, err)
		return r.State
	}
	require.Equal(t, job.FailureKicked, state(1))
	require.Equal(t, job.FailureBuried, state(2))
	n, err = f.KickedBefore(b.ctx, kick, kick.Add(2*time.Second), "a", 100)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Equal(t, job.FailureBuried, state(3), "failed again after the kick: still buried")
	require.Equal(t, job.FailureBuried, state(4), "another tube")
	n, err = f.KickedBefore(b.ctx, kick, kick, "", 0, 3, 4)
	require.NoError(t, err)
	require.Equal(t, 1, n, "by id: 4 only, 3 failed after")
	require.Equal(t, job.FailureKicked, state(4))
}

package hub

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/job"
)

func recentResult(id uint64, at time.Time, size int) (job.Result, *frame) {
	p := fmt.Sprintf(`{"pad":%q}`, strings.Repeat("x", size))
	r := job.Result{ID: id, Hash: job.Hash(p), Payload: p, CompletedAt: at, StoredAt: at}
	return r, newFrame(job.Completed(r))
}

func ids(fs []*frame) []uint64 {
	var out []uint64
	for _, f := range fs {
		out = append(out, f.id)
	}
	return out
}

// The recent completions stay within their budget of bytes: past it the
// oldest go, the floor rises to them, and a replay that starts below the
// floor is not served from memory (it reads the store); late commits
// take their place in cursor order.
func TestRecentCompletionsStayWithinTheirBudget(t *testing.T) {
	const size, budget = 1000, 20 << 10
	r := newRecent(budget)
	base := time.UnixMilli(1_700_000_000_000).UTC()
	_, ok := r.last(1)
	require.False(t, ok, "nothing is served before prime")
	r.prime(position{})
	all, ok := r.last(5)
	require.True(t, ok, "an empty store: all there is")
	require.Empty(t, all)

	for i := range uint64(100) {
		r.add(recentResult(i+1, base.Add(time.Duration(i)*time.Millisecond), size))
	}
	n, bytes := r.size()
	require.LessOrEqual(t, bytes, budget, "within the budget")
	require.Less(t, n, 100, "the oldest went")
	require.Greater(t, n, 10)
	first := uint64(100 - n + 1)

	fs, ok := r.last(5)
	require.True(t, ok)
	require.Equal(t, []uint64{96, 97, 98, 99, 100}, ids(fs))
	_, ok = r.last(n + 1)
	require.False(t, ok, "more than it holds reads the store")

	_, _, ok = r.since(position{at: base, id: 1}, 1000)
	require.False(t, ok, "a cursor below the floor reads the store")
	fs, more, ok := r.since(position{at: base.Add(time.Duration(first-1) * time.Millisecond), id: first}, 1000)
	require.True(t, ok, "a cursor at the floor is served")
	require.False(t, more)
	require.Len(t, fs, n-1)
	fs, more, ok = r.since(position{at: base.Add(90 * time.Millisecond), id: 91}, 3)
	require.True(t, ok)
	require.True(t, more, "more than the limit")
	require.Equal(t, []uint64{92, 93, 94}, ids(fs))

	// A late commit within the window takes its place; one below the
	// floor is not kept.
	r.add(recentResult(500, base.Add(95*time.Millisecond), 10))
	r.add(recentResult(501, base, 10))
	fs, _, _ = r.since(position{at: base.Add(94 * time.Millisecond), id: 95}, 1000)
	require.Equal(t, []uint64{96, 500, 97, 98, 99, 100}, ids(fs), "in cursor order: same millisecond, then id")
	_, bytes = r.size()
	require.LessOrEqual(t, bytes, budget)
}

// Priming drops what lies at or below the newest stored result: those
// were stored before the feed started, and the window cannot say it has
// all of them.
func TestPrimeSetsTheFloor(t *testing.T) {
	r := newRecent(1 << 20)
	base := time.UnixMilli(1_700_000_000_000).UTC()
	for i := range uint64(10) {
		r.add(recentResult(i+1, base.Add(time.Duration(i)*time.Millisecond), 10))
	}
	r.prime(position{at: base.Add(4 * time.Millisecond), id: 5})
	fs, ok := r.last(5)
	require.True(t, ok)
	require.Equal(t, []uint64{6, 7, 8, 9, 10}, ids(fs))
	_, ok = r.last(6)
	require.False(t, ok, "the sixth newest was stored before the feed started")
	_, _, ok = r.since(position{at: base, id: 1}, 100)
	require.False(t, ok)
}

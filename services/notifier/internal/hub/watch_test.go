package hub

import (
	"context"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/job"
)

// heap returns the live heap after a collection.
func heap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// watchBudget is the most a watch may cost, in bytes, what PROTOCOL.md
// states: MaxWatches times this is the notifier's memory for watches.
const watchBudget = 150

// A watch costs at most watchBudget bytes: clients each watching
// MaxJobs distinct jobs (the dearest case: no job shared), measured on
// the live heap before and after, and again when a second client
// watches the same jobs.
func TestAWatchIsCheap(t *testing.T) {
	const clients, perClient = 20, 10000
	h := New(Config{MaxWatches: 2 * clients * perClient})
	t.Cleanup(func() { _ = h.Shutdown(context.Background()) })
	cs := make([]*client, 2*clients)
	for i := range cs {
		cs[i] = h.newClient("ws", false, true)
		h.add(cs[i], &replayRequest{})
	}
	ids := make([][]uint64, clients)
	for i := range ids {
		for j := range perClient {
			ids[i] = append(ids[i], uint64(i*perClient+j+1))
		}
	}

	before := heap()
	for i := range clients {
		require.Len(t, h.watchJobs(cs[i], ids[i]), perClient)
	}
	distinct := heap()
	for i := range clients {
		require.Len(t, h.watchJobs(cs[clients+i], ids[i]), perClient)
	}
	shared := heap()
	runtime.KeepAlive(h)
	require.Equal(t, 2*clients*perClient, h.Watches())

	perDistinct := float64(distinct-before) / (clients * perClient)
	perShared := float64(shared-distinct) / (clients * perClient)
	t.Logf("bytes per watch: %.0f for a job nobody else watches, %.0f for a second watcher", perDistinct, perShared)
	require.Less(t, perDistinct, float64(watchBudget))
	require.Less(t, perShared, float64(watchBudget))

	// All released when the clients leave.
	for _, c := range cs {
		h.remove(c)
	}
	require.Zero(t, h.Watches())
	require.Empty(t, h.watches)
}

// Past MaxWatches a subscribe is refused with one error frame that names
// the limit and what was left out; an unsubscribe makes room again.
func TestMaxWatchesIsATotalOverClients(t *testing.T) {
	h := New(Config{MaxWatches: 30, MaxJobs: 25})
	t.Cleanup(func() { _ = h.Shutdown(context.Background()) })
	a, b := h.newClient("ws", false, true), h.newClient("ws", false, true)
	h.add(a, &replayRequest{})
	h.add(b, &replayRequest{})
	seq := func(first, n uint64) []uint64 {
		var out []uint64
		for i := range n {
			out = append(out, first+i)
		}
		return out
	}
	require.Len(t, h.watchJobs(a, seq(1, 30)), 25, "a client's own limit first")
	require.Len(t, a.take(), 1)
	require.Len(t, h.watchJobs(b, seq(100, 10)), 5, "then the total")
	q := b.take()
	require.Len(t, q, 1)
	require.Equal(t, "error", q[0].typ)
	require.Contains(t, string(q[0].data), "the notifier watches 30 jobs for all its clients, its limit")
	require.Contains(t, string(q[0].data), "job 105 and the 4 after it")
	require.Equal(t, 30, h.Watches())

	h.handle(a, job.ClientMessage{Type: job.TypeUnsubscribe, Jobs: seq(1, 3)})
	require.Equal(t, 27, h.Watches())
	h.Forget(4) // a job that exists nowhere is no longer watched
	require.Equal(t, 26, h.Watches())
	require.Len(t, h.watchJobs(b, seq(105, 10)), 4)
	require.Equal(t, 30, h.Watches())
	h.remove(a)
	require.Equal(t, 9, h.Watches())
}

// Watchers come and go in any order, and a job is dropped with its last.
func TestWatchersInAnyOrder(t *testing.T) {
	cs := []*client{{}, {}, {}, {}}
	for _, order := range [][]int{{0, 1, 2, 3}, {3, 2, 1, 0}, {1, 3, 0, 2}, {0, 0, 2, 1, 3}} {
		var w watch
		for _, c := range cs {
			w.add(c)
		}
		seen := 0
		w.each(func(*client) { seen++ })
		require.Equal(t, 4, seen)
		left := map[*client]bool{cs[0]: true, cs[1]: true, cs[2]: true, cs[3]: true}
		for _, i := range order {
			empty := w.remove(cs[i])
			delete(left, cs[i])
			require.Equal(t, len(left) == 0, empty, "order %v", order)
			for c := range left {
				require.True(t, w.has(c), "order %v", order)
			}
			require.False(t, w.has(cs[i]))
		}
	}
}

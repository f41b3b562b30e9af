package hub_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/testenv"
	"github.com/jobsys/jobs/services/notifier/internal/hub"
	"github.com/jobsys/jobs/services/notifier/internal/metrics"
)

// countedStore counts the replay queries that reached the store and
// returned.
type countedStore struct {
	hub.ReplayStore
	queries, inflight atomic.Int64
}

func (s *countedStore) After(ctx context.Context, at time.Time, id uint64, limit int) ([]job.Result, error) {
	s.inflight.Add(1)
	defer s.inflight.Add(-1)
	defer s.queries.Add(1)
	return s.ReplayStore.After(ctx, at, id, limit)
}

func (s *countedStore) Latest(ctx context.Context, n int) ([]job.Result, error) {
	defer s.queries.Add(1)
	return s.ReplayStore.Latest(ctx, n)
}

// publish stores results for ids stamped at, and publishes them as the
// feed would.
func publish(t *testing.T, s *server, b testenv.Clients, at time.Time, ids ...uint64) []job.Result {
	t.Helper()
	rs := stored(t, b, at, ids...)
	s.hub.Completed(context.Background(), rs)
	return rs
}

func within(t *testing.T, events <-chan job.Event, n int) []uint64 {
	t.Helper()
	var got []uint64
	for range n {
		select {
		case ev := <-events:
			got = append(got, ev.ID)
		case <-time.After(5 * time.Second):
			t.Fatalf("got %v, want %d", got, n)
		}
	}
	return got
}

// Once primed, replays that start within the recent completions (?last=,
// ?since=, Last-Event-ID) are served from memory: the store is not
// asked. Past the memory budget the oldest are gone, and a replay from
// before them reads the store and still gets everything, once.
func TestRecentReplaysAreServedFromMemory(t *testing.T) {
	t.Parallel()
	b := testenv.SetupClients(t)
	st := &countedStore{ReplayStore: b.Store}
	m := metrics.New()
	// 30 results of about 1.4 KB fit; 60 do not.
	s := serve(t, b, hub.Config{Store: st, Metrics: m, RecentBytes: 50 << 10, Lookback: 2 * time.Second})
	base := time.Now().Add(-time.Hour)
	old := stored(t, b, base, 1)
	require.NoError(t, s.hub.Prime(context.Background()))
	primed := st.queries.Load()

	var rs []job.Result
	for i := range uint64(20) {
		rs = append(rs, stored(t, b, base.Add(time.Duration(i+1)*time.Second), i+2)...)
	}
	s.hub.Completed(context.Background(), rs)

	c := s.dialWS(t, "?last=5")
	for _, want := range []uint64{17, 18, 19, 20, 21} {
		require.Equal(t, want, c.next(5*time.Second).ID)
	}
	require.Equal(t, []uint64{12, 13, 14}, within(t, s.sse(t, "?since="+string(job.CursorOf(rs[9])), nil), 3))
	// Last-Event-ID rewinds 2s: 19 and 20 come again.
	require.Equal(t, []uint64{19, 20, 21}, within(t, s.sse(t, "", http.Header{"Last-Event-ID": {string(job.CursorOf(rs[19]))}}), 3))
	require.Equal(t, primed, st.queries.Load(), "no replay asked the store")
	require.EqualValues(t, 3, testutil.ToFloat64(m.Replays.WithLabelValues("memory")))

	// Past the budget: 60 more of 1 KB each.
	pad := strings.Repeat("x", 1000)
	var more []job.Result
	for i := range uint64(60) {
		p := fmt.Sprintf(`{"n":%d,"pad":%q}`, i, pad)
		at := base.Add(time.Duration(100+i) * time.Second).UTC().Truncate(time.Millisecond)
		r := job.Result{ID: 100 + i, Hash: job.Hash(p), Payload: p, Tube: b.Tube, Attempts: 1, CompletedAt: at, StoredAt: at}
		_, err := b.Store.Collection().InsertOne(context.Background(), r)
		require.NoError(t, err)
		more = append(more, r)
	}
	s.hub.Completed(context.Background(), more)
	require.LessOrEqual(t, testutil.ToFloat64(m.RecentBytes), float64(50<<10), "within the budget")
	got := within(t, s.sse(t, "?since="+string(job.CursorOf(old[0])), nil), 80)
	require.Equal(t, uint64(2), got[0])
	require.Equal(t, uint64(159), got[79])
	require.Greater(t, st.queries.Load(), primed, "a replay from before the window read the store")
	require.EqualValues(t, 1, testutil.ToFloat64(m.Replays.WithLabelValues("store")))
}

// Clients that ask for a large replay and read nothing hold no replay
// place while their writes wait: a ?last=50 from the store still opens,
// though they took every place (MaxReplays 4) and their writes would wait
// 30s to time out. Before, they held the places until then.
func TestNonReadingReplaysHoldNoPlace(t *testing.T) {
	t.Parallel()
	b := testenv.SetupClients(t)
	st := &countedStore{ReplayStore: b.Store}
	s := serve(t, b, hub.Config{Store: st, MaxReplays: 4, WriteTimeout: 30 * time.Second})
	// 2,000 results of 2 KB: 4 MB per replay, far more than the sockets
	// of a client that reads nothing hold.
	pad := strings.Repeat("x", 2000)
	base := time.Now().Add(-time.Hour).UTC().Truncate(time.Millisecond)
	docs := make([]any, 0, 2000)
	for i := range uint64(2000) {
		p := fmt.Sprintf(`{"n":%d,"pad":%q}`, i, pad)
		at := base.Add(time.Duration(i) * time.Millisecond)
		docs = append(docs, job.Result{ID: i + 1, Hash: job.Hash(p), Payload: p, Tube: b.Tube, Attempts: 1, CompletedAt: at, StoredAt: at})
	}
	_, err := b.Store.Collection().InsertMany(context.Background(), docs)
	require.NoError(t, err)

	for range 4 {
		conn, err := net.Dial("tcp", strings.TrimPrefix(s.base, "http://"))
		require.NoError(t, err)
		t.Cleanup(func() { _ = conn.Close() })
		require.NoError(t, conn.(*net.TCPConn).SetReadBuffer(4<<10))
		_, err = fmt.Fprintf(conn, "GET /events?since=0-0 HTTP/1.1\r\nHost: x\r\n\r\n")
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return s.hub.Clients() == 4 }, 10*time.Second, 10*time.Millisecond)
	// They read pages until their sockets are full, and then are stuck
	// writing: no query in flight, and none done, for a second.
	last, still := int64(-1), 0
	require.Eventually(t, func() bool {
		n := st.queries.Load()
		if n >= 4 && n == last && st.inflight.Load() == 0 {
			still++
		} else {
			still = 0
		}
		last = n
		return still >= 10
	}, 60*time.Second, 100*time.Millisecond)

	// Refused with 503 after ReplayWait (2s) before. The store's own
	// time for the query is not this test's: it is generous with it.
	start := time.Now()
	c := s.dialWS(t, "?last=50")
	require.Equal(t, uint64(1951), c.next(20*time.Second).ID)
	for want := uint64(1952); want <= 2000; want++ {
		require.Equal(t, want, c.next(5*time.Second).ID)
	}
	t.Logf("?last=50 from the store with 4 non-reading replays: replayed in %s", time.Since(start))
}

// The board's ?last=N does not queue behind replays that read the store:
// once primed it is served from memory, with every place taken by a
// replay whose query hangs.
func TestLastFromMemoryDoesNotWaitForAPlace(t *testing.T) {
	t.Parallel()
	b := testenv.SetupClients(t)
	g := &gatedStore{ReplayStore: b.Store, entered: make(chan struct{}, 10), open: make(chan struct{})}
	t.Cleanup(func() { close(g.open) })
	s := serve(t, b, hub.Config{Store: g, MaxReplays: 1, ReplayWait: 200 * time.Millisecond})
	base := time.Now().Add(-time.Hour)
	stored(t, b, base, 1)
	require.NoError(t, s.hub.Prime(context.Background()))
	var rs []job.Result
	for i := range uint64(10) {
		rs = append(rs, stored(t, b, base.Add(time.Duration(i+1)*time.Second), i+2)...)
	}
	s.hub.Completed(context.Background(), rs)

	s.dialWS(t, "?since=0-0") // before the window: reads the store, and hangs
	select {
	case <-g.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the replay did not start")
	}
	code, _, _ := refused(t, s.base+"/events?since=0-0")
	require.Equal(t, http.StatusServiceUnavailable, code, "the one place is taken")
	c := s.dialWS(t, "?last=3")
	for _, want := range []uint64{9, 10, 11} {
		require.Equal(t, want, c.next(5*time.Second).ID)
	}
	require.Equal(t, []uint64{10, 11}, within(t, s.sse(t, "?since="+string(job.CursorOf(rs[7])), nil), 2))
}

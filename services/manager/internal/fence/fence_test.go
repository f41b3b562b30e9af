package fence_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/queue"
	"github.com/jobsys/jobs/pkg/store"
	"github.com/jobsys/jobs/pkg/testenv"
	"github.com/jobsys/jobs/services/manager/internal/fence"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var (
	_ fence.Queue = (*queue.Pool)(nil)
	_ fence.Store = (*store.Results)(nil)
)

// system is one beanstalkd (restarted without a binlog, it counts ids
// from 1 again) and one results database, shared by several managers.
type system struct {
	env     testenv.Bundle
	bs      *testenv.Beanstalkd
	client  *mongo.Client
	results *store.Results
}

// manager is one manager's fence and queue pool.
type manager struct {
	pool   *queue.Pool
	fence  *fence.Fence
	logs   *testenv.LogBuffer
	fenced int
	mu     sync.Mutex
}

func newSystem(t testing.TB) *system {
	t.Helper()
	s := &system{env: testenv.Setup(t), bs: testenv.StartBeanstalkd(t, testenv.BeanstalkdOptions{})}
	client, err := store.Connect(s.env.Mongo.URL, "fence-test", 2*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { _ = client.Disconnect(context.Background()) })
	s.client = client
	s.results = store.NewResults(client, s.env.DB, "completed")
	return s
}

// manager starts a manager's fence on the system; client, when set,
// replaces the system's MongoDB client.
func (s *system) manager(t testing.TB, client *mongo.Client) *manager {
	t.Helper()
	if client == nil {
		client = s.client
	}
	m := &manager{pool: queue.NewPool(queue.PoolConfig{Addr: s.bs.Addr()}), logs: &testenv.LogBuffer{}}
	t.Cleanup(func() { m.pool.Close() })
	m.fence = fence.New(m.pool, s.results, client.Database(s.env.DB).Collection("completed_id_fence"), slog.New(slog.NewTextHandler(m.logs, nil)))
	m.fence.OnFence = func() { m.mu.Lock(); m.fenced++; m.mu.Unlock() }
	m.pool.SetOnConnect(m.fence.OnConnect)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", m.logs.String())
		}
	})
	return m
}

func (m *manager) fences() int { m.mu.Lock(); defer m.mu.Unlock(); return m.fenced }

func ctx(t testing.TB) context.Context { return testenv.Context(t, 30*time.Second) }

// put puts through the fence, trying again while the pool's connections
// to an old process fail.
func put(t *testing.T, m *manager, body string) uint64 {
	t.Helper()
	var id uint64
	require.Eventually(t, func() bool {
		var err error
		id, err = m.fence.Put(ctx(t), []byte(body), queue.PutOptions{Tube: "work", TTR: time.Minute})
		if err != nil && !errors.Is(err, queue.ErrUnavailable) {
			t.Fatalf("put: %v", err)
		}
		return err == nil
	}, 10*time.Second, 20*time.Millisecond)
	return id
}

func tubes(t *testing.T, m *manager) map[string]job.TubeStats {
	t.Helper()
	st, err := m.pool.Tubes(ctx(t))
	require.NoError(t, err)
	return st
}

// The first document starts at the largest stored result; a job comes
// out of the fence ready, not delayed, and no throwaway job is left.
func TestFirstFenceStartsAboveTheStoredResults(t *testing.T) {
	t.Parallel()
	s := newSystem(t)
	require.NoError(t, s.results.Save(ctx(t), job.Result{ID: 50, Hash: job.Hash("{}"), Payload: "{}"}))
	m := s.manager(t, nil)
	_, err := m.fence.Sync(ctx(t))
	require.NoError(t, err)
	require.GreaterOrEqual(t, m.fence.Value(), uint64(50), "Sync returns once beanstalkd is fenced: the manager serves after it")
	id := put(t, m, `{}`)
	require.Greater(t, id, uint64(50))
	st := tubes(t, m)
	require.EqualValues(t, 1, st["work"].Ready)
	require.Zero(t, st["work"].Delayed)
	require.Zero(t, st[fence.Tube].Ready+st[fence.Tube].Delayed, "no throwaway job is left")
	js, err := m.pool.StatsJob(ctx(t), id)
	require.NoError(t, err)
	require.EqualValues(t, 1, js.Kicks, "held, then kicked once its id was checked")
}

// Issue 25's reproduction: three managers, jobs held, beanstalkd
// restarted without its binlog, puts through another manager: no id is
// handed out twice, one manager moves beanstalkd's ids, and a restarted
// manager spends nothing.
func TestThreeManagersAcrossRestartsNeverReuseAnID(t *testing.T) {
	t.Parallel()
	s := newSystem(t)
	ms := []*manager{s.manager(t, nil), s.manager(t, nil), s.manager(t, nil)}
	seen := map[uint64]int{}
	putAll := func(round int) {
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i := range 24 {
			wg.Go(func() {
				id := put(t, ms[(i+round)%3], `{}`)
				mu.Lock()
				defer mu.Unlock()
				assert.Zero(t, seen[id], "id %d handed out twice", id)
				seen[id]++
			})
		}
		wg.Wait()
	}
	putAll(0)
	for round := 1; round <= 3; round++ {
		s.bs.Stop()
		require.NoError(t, s.bs.Restart())
		putAll(round)
		total := 0
		for _, m := range ms {
			total += m.fences()
		}
		require.Equal(t, round, total, "one manager moved each restarted beanstalkd's ids (the first one needed none)")
	}
	// A manager restarted: a new fence over the same document.
	ms[1] = s.manager(t, nil)
	putAll(4)
	require.Zero(t, ms[1].fences(), "the restarted manager found beanstalkd fenced")
	require.Len(t, seen, 5*24)
}

// Never fails open: when MongoDB cannot be reached and the lease of ids
// ran out, the put is refused with ErrUnproven (a 503) and the job is
// withdrawn before anything could reserve it.
func TestLeaseRunOutWithoutMongoDBRefusesAndWithdraws(t *testing.T) {
	t.Parallel()
	s := newSystem(t)
	client, err := store.Connect(s.env.Mongo.URL, "fence-test-lost", 500*time.Millisecond)
	require.NoError(t, err)
	m := s.manager(t, client)
	m.fence.Lease = 2
	c := queue.NewConsumer(s.bs.Addr(), []string{"work"}, 0)
	defer c.Close()
	first := put(t, m, `{}`)
	r, err := c.Reserve(ctx(t), time.Second)
	require.NoError(t, err)
	require.Equal(t, first, r.ID)
	require.NoError(t, c.Delete(ctx(t), r.ID))

	require.NoError(t, client.Disconnect(ctx(t)))
	var refused bool
	for range 4 {
		_, err := m.fence.Put(ctx(t), []byte(`{}`), queue.PutOptions{Tube: "work", TTR: time.Minute})
		if err != nil {
			require.ErrorIs(t, err, fence.ErrUnproven)
			require.ErrorIs(t, err, queue.ErrUnavailable, "the API answers 503")
			refused = true
			break
		}
		r, err := c.Reserve(ctx(t), time.Second)
		require.NoError(t, err)
		require.NoError(t, c.Delete(ctx(t), r.ID))
	}
	require.True(t, refused, "the lease of 2 ran out")
	_, err = c.Reserve(ctx(t), time.Second)
	require.ErrorIs(t, err, queue.ErrNoJob, "the refused job was withdrawn unworked")
	st := tubes(t, m)
	require.Zero(t, st["work"].Ready+st["work"].Delayed+st["work"].Reserved)
}

// A manager that cannot read the fence refuses every put, and puts
// nothing: there is no id it could prove unused. Its other queue calls
// (GET's stats-job, /readyz) go on.
func TestNoFenceNoPut(t *testing.T) {
	t.Parallel()
	s := newSystem(t)
	client, err := store.Connect(s.env.Mongo.URL, "fence-test-none", 500*time.Millisecond)
	require.NoError(t, err)
	require.NoError(t, client.Disconnect(ctx(t)))
	m := s.manager(t, client)
	_, err = m.fence.Put(ctx(t), []byte(`{}`), queue.PutOptions{Tube: "work", TTR: time.Minute})
	require.ErrorIs(t, err, fence.ErrUnproven)
	require.NoError(t, m.pool.Ping(ctx(t)))
	_, err = m.pool.StatsJob(ctx(t), 1)
	require.ErrorIs(t, err, queue.ErrNotFound)
	other := s.manager(t, nil)
	st := tubes(t, other)
	require.Zero(t, st["work"].Ready+st["work"].Delayed)
}

// Watch fences a new beanstalkd process before any put needs it, and
// keeps hw a lease ahead of the ids handed out.
func TestWatchFencesAheadOfPuts(t *testing.T) {
	t.Parallel()
	s := newSystem(t)
	m := s.manager(t, nil)
	m.fence.Lease = 10
	wctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.fence.Watch(wctx, fence.WatchOptions{Every: 20 * time.Millisecond}) }()
	t.Cleanup(func() { cancel(); <-done })
	require.Eventually(t, func() bool { return m.fence.Value() >= 10 }, 10*time.Second, 10*time.Millisecond)
	require.Zero(t, m.fences(), "a fresh beanstalkd needs no throwaway job")
	var last uint64
	for range 30 {
		last = put(t, m, `{}`)
	}
	require.Eventually(t, func() bool { return m.fence.Value() >= last+5 }, 10*time.Second, 10*time.Millisecond,
		"the mark is raised ahead in the background")
	s.bs.Stop()
	require.NoError(t, s.bs.Restart())
	require.Eventually(t, func() bool { return m.fences() == 1 }, 10*time.Second, 10*time.Millisecond, "the new process is fenced by Watch")
	require.Greater(t, put(t, m, `{}`), last)
}

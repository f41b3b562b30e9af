package fence_test

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

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

type bundle struct {
	bs      *testenv.Beanstalkd
	pool    *queue.Pool
	results *store.Results
	logs    *testenv.LogBuffer
	fence   *fence.Fence
}

// setup gives the test a beanstalkd of its own (restarted without a
// binlog, it counts ids from 1 again) and a fresh results database.
func setup(t *testing.T) bundle {
	t.Helper()
	env := testenv.Setup(t)
	b := bundle{bs: testenv.StartBeanstalkd(t, testenv.BeanstalkdOptions{}), logs: &testenv.LogBuffer{}}
	b.pool = queue.NewPool(queue.PoolConfig{Addr: b.bs.Addr()})
	t.Cleanup(func() { b.pool.Close() })
	client, err := store.Connect(env.Mongo.URL, "fence-test", 2*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { _ = client.Disconnect(context.Background()) })
	b.results = store.NewResults(client, env.DB, "completed")
	b.fence = fence.New(b.pool, b.results, slog.New(slog.NewTextHandler(b.logs, nil)))
	b.pool.SetOnConnect(b.fence.OnConnect)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", b.logs.String())
		}
	})
	return b
}

func ctx(t *testing.T) context.Context { return testenv.Context(t, 30*time.Second) }

// put puts through the fence, trying again while the pool's connections
// to the old process fail.
func put(t *testing.T, b bundle, body string) uint64 {
	t.Helper()
	var id uint64
	require.Eventually(t, func() bool {
		var err error
		id, err = b.fence.Put(ctx(t), []byte(body), queue.PutOptions{Tube: "work", TTR: time.Minute})
		if err != nil && !errors.Is(err, queue.ErrUnavailable) {
			t.Fatalf("put: %v", err)
		}
		return err == nil
	}, 10*time.Second, 20*time.Millisecond)
	return id
}

func TestFreshSystemSpendsNoIDs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	require.NoError(t, b.fence.Sync(ctx(t)))
	require.EqualValues(t, 1, put(t, b, `{"example":"data"}`), "the first job is job 1, as in the original")
	require.Zero(t, b.fence.Value(), "the fence is what was taken when it was synced, not a running maximum")
}

func TestSyncReadsTheLargestStoredID(t *testing.T) {
	t.Parallel()
	b := setup(t)
	require.NoError(t, b.results.Save(ctx(t), job.Result{ID: 50, Hash: job.Hash("{}"), Payload: "{}"}))
	require.NoError(t, b.fence.Sync(ctx(t)))
	require.Greater(t, b.fence.Value(), uint64(50))

	id := put(t, b, `{}`)
	require.Greater(t, id, uint64(50))
	require.NotContains(t, b.logs.String(), "level=WARN", "Sync moved the ids on before any job was put")
	tubes, err := b.pool.Tubes(ctx(t))
	require.NoError(t, err)
	require.EqualValues(t, 1, tubes["work"].Ready)
	require.Zero(t, tubes[fence.Tube].Ready+tubes[fence.Tube].Delayed, "no throwaway job is left")
}

// TestPutAfterRestartWithoutBinlog is the case the fence is for: the
// manager keeps running while beanstalkd restarts and counts from 1.
func TestPutAfterRestartWithoutBinlog(t *testing.T) {
	t.Parallel()
	b := setup(t)
	require.NoError(t, b.fence.Sync(ctx(t)))
	var old []uint64
	for range 3 {
		old = append(old, put(t, b, `{"old":true}`))
	}
	require.Equal(t, []uint64{1, 2, 3}, old)

	b.bs.Stop()
	require.NoError(t, b.bs.Restart())

	id := put(t, b, `{"new":true}`)
	require.Greater(t, id, uint64(3))
	require.Contains(t, b.logs.String(), "level=WARN")
	require.Contains(t, b.logs.String(), "beanstalkd restarted: moving its ids past every id known to be taken\" fence=3")

	// The job that got a reused id was withdrawn; only the new one is
	// queued, under its fresh id.
	for _, o := range old {
		_, err := b.pool.StatsJob(ctx(t), o)
		require.ErrorIs(t, err, queue.ErrNotFound, "id %d", o)
	}
	s, err := b.pool.StatsJob(ctx(t), id)
	require.NoError(t, err)
	require.Equal(t, "work", s.Tube)
	tubes, err := b.pool.Tubes(ctx(t))
	require.NoError(t, err)
	require.EqualValues(t, 1, tubes["work"].Ready)
	require.Zero(t, tubes[fence.Tube].Ready+tubes[fence.Tube].Delayed)
}

func TestConcurrentPutsAfterRestartAllGetFreshIDs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for range 20 {
		put(t, b, `{}`)
	}
	b.bs.Stop()
	require.NoError(t, b.bs.Restart())
	// Drop the connections to the old process.
	b.pool.Close()

	var mu sync.Mutex
	seen := map[uint64]bool{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			id, err := b.fence.Put(context.Background(), []byte(`{}`), queue.PutOptions{Tube: "work", TTR: time.Minute})
			if err != nil {
				t.Errorf("put: %v", err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			assert.False(t, seen[id], "id %d given twice", id)
			seen[id] = true
		})
	}
	wg.Wait()
	for id := range seen {
		require.Greater(t, id, uint64(20))
	}
	tubes, err := b.pool.Tubes(ctx(t))
	require.NoError(t, err)
	require.EqualValues(t, 8, tubes["work"].Ready, "exactly the eight jobs are queued")
}

// TestWatchSyncsWhenBeanstalkdReturns: the watcher notices the restart
// and moves the ids on before the next put, so no job is put twice.
func TestWatchSyncsWhenBeanstalkdReturns(t *testing.T) {
	t.Parallel()
	b := setup(t)
	require.NoError(t, b.results.Save(ctx(t), job.Result{ID: 10, Hash: job.Hash("{}"), Payload: "{}"}))
	wctx, cancel := context.WithCancel(context.Background())
	var downs, ups sync.WaitGroup
	downs.Add(1)
	ups.Add(1)
	var once, upOnce sync.Once
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.fence.Watch(wctx, fence.WatchOptions{
			Every:  20 * time.Millisecond,
			OnDown: func() { once.Do(downs.Done); b.pool.Close() },
			OnUp: func(stats map[string]string) {
				assert.NotEmpty(t, stats["max-job-size"])
				upOnce.Do(ups.Done)
			},
		})
	}()
	t.Cleanup(func() { cancel(); <-done })

	require.Eventually(t, func() bool { return b.fence.Value() > 10 }, 10*time.Second, 10*time.Millisecond, "the first check syncs")
	put(t, b, `{}`)
	fenceBefore := b.fence.Value()

	b.bs.Stop()
	downs.Wait()
	require.NoError(t, b.bs.Restart())
	ups.Wait()
	require.Eventually(t, func() bool {
		stats, err := b.pool.ServerStats(ctx(t))
		if err != nil {
			return false
		}
		made, _ := strconv.ParseUint(stats["total-jobs"], 10, 64)
		return made > fenceBefore
	}, 10*time.Second, 10*time.Millisecond, "the watcher moves the new process's ids on")

	id := put(t, b, `{}`)
	require.Greater(t, id, fenceBefore)
	require.NotContains(t, b.logs.String(), "gave out an id at or under the fence", "no put came back under the fence")
}

// Puts on different connections finish out of order; an id below one
// already handed out is normal and must not be taken for a restart.
func TestConcurrentPutsWithoutRestartAreNotFenced(t *testing.T) {
	t.Parallel()
	b := setup(t)
	require.NoError(t, b.fence.Sync(ctx(t)))
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for range 25 {
				if _, err := b.fence.Put(context.Background(), []byte(`{}`), queue.PutOptions{Tube: "work", TTR: time.Minute}); err != nil {
					t.Errorf("put: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	require.NotContains(t, b.logs.String(), "level=WARN")
	tubes, err := b.pool.Tubes(ctx(t))
	require.NoError(t, err)
	require.EqualValues(t, 400, tubes["work"].Ready)
}

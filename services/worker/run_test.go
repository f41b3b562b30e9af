package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/queue"
	"github.com/jobsys/jobs/pkg/store"
	"github.com/jobsys/jobs/pkg/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// bundle is what a worker test needs: the servers, a pool to put and
// inspect jobs with, and the results collection.
type bundle struct{ testenv.Clients }

func setup(t *testing.T) bundle { return bundle{testenv.SetupClients(t)} }

// env is the worker's environment for this bundle: its servers, tube and
// database, a metrics port of the system's choosing, and extra on top.
func (b bundle) env(extra map[string]string) map[string]string {
	m := map[string]string{
		"BEANSTALK_HOST":      b.Beanstalk.Host,
		"BEANSTALK_PORT":      strconv.Itoa(b.Beanstalk.Port),
		"MONGO_URL":           b.Mongo.URL,
		"MONGO_DB":            b.DB,
		"MONGO_COLLECTION":    "completed",
		"WORKER_TUBES":        b.Tube,
		"WORKER_METRICS_HOST": "127.0.0.1",
		"WORKER_METRICS_PORT": "0",
		"WORKER_ID":           "test-worker",
		"LOG_FORMAT":          "text",
		"LOG_LEVEL":           "info",
	}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

// startWorker runs the worker in-process until the test ends, then checks
// that run returned nil. On failure the test log gets the worker's log.
func startWorker(t *testing.T, env map[string]string) *testenv.LogBuffer {
	t.Helper()
	logs := &testenv.LogBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, func(k string) string { return env[k] }, logs) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(15 * time.Second):
			t.Error("run did not return within 15s of cancellation")
		}
		if t.Failed() {
			t.Logf("worker log:\n%s", logs.String())
		}
	})
	return logs
}

func put(t *testing.T, b bundle, tube, body string, ttr time.Duration) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	id, err := b.Queue.Put(ctx, []byte(body), queue.PutOptions{Tube: tube, TTR: ttr})
	require.NoError(t, err)
	return id
}

func statsJob(b bundle, id uint64) (job.Stats, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return b.Queue.StatsJob(ctx, id)
}

func find(b bundle, id uint64) (job.Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return b.Store.Find(ctx, id)
}

func count(t *testing.T, b bundle) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := b.Store.Collection().CountDocuments(ctx, map[string]any{})
	require.NoError(t, err)
	return n
}

// waitGone waits until beanstalkd no longer knows job id.
func waitGone(t *testing.T, b bundle, id uint64, within time.Duration) {
	t.Helper()
	require.Eventually(t, func() bool {
		_, err := statsJob(b, id)
		return isNotFound(err)
	}, within, 20*time.Millisecond, "job %d still in the queue", id)
}

func isNotFound(err error) bool {
	return err != nil && strings.Contains(err.Error(), queue.ErrNotFound.Error())
}

// waitState waits until job id is in state and returns its stats.
func waitState(t *testing.T, b bundle, id uint64, state job.State, within time.Duration) job.Stats {
	t.Helper()
	var s job.Stats
	require.Eventually(t, func() bool {
		var err error
		s, err = statsJob(b, id)
		return err == nil && s.State == state
	}, within, 20*time.Millisecond, "job %d never %s (last: %+v)", id, state, s)
	return s
}

var metricsAddr = regexp.MustCompile(`msg="metrics listening".* addr=(\S+)`)

func TestResultIsStoredThenJobDeleted(t *testing.T) {
	t.Parallel()
	b := setup(t)
	logs := startWorker(t, b.env(nil))
	id := put(t, b, b.Tube, `{"example":"data"}`, time.Minute)
	before := time.Now().Truncate(time.Millisecond)

	waitGone(t, b, id, 20*time.Second)
	// The job is gone only after its result is written: no polling here.
	r, err := find(b, id)
	require.NoError(t, err)
	require.Equal(t, id, r.ID)
	require.Equal(t, "09ee943c4fa33cd5a355eb7a4e38f7ef", r.Hash)
	require.Equal(t, `{"example":"data"}`, r.Payload)
	require.Equal(t, b.Tube, r.Tube)
	require.Equal(t, "test-worker", r.Worker)
	require.Equal(t, 1, r.Attempts)
	require.False(t, r.StartedAt.Before(before.Add(-time.Second)), "started_at %s", r.StartedAt)
	require.False(t, r.CompletedAt.Before(r.StartedAt))
	require.False(t, r.CompletedAt.After(time.Now()))
	require.Zero(t, r.StartedAt.Nanosecond()%int(time.Millisecond), "milliseconds only")
	require.Zero(t, r.CompletedAt.Nanosecond()%int(time.Millisecond), "milliseconds only")
	require.GreaterOrEqual(t, r.DurationMS, 0.0)
	require.Less(t, r.DurationMS, 10000.0)
	require.EqualValues(t, 1, count(t, b))

	// The bound address is logged, and it serves health and metrics.
	m := metricsAddr.FindStringSubmatch(logs.String())
	require.NotNil(t, m, "no metrics address in the log:\n%s", logs.String())
	resp, err := http.Get("http://" + m[1] + "/healthz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Eventually(t, func() bool {
		body := httpGet(t, "http://"+m[1]+"/metrics")
		return strings.Contains(body, fmt.Sprintf("jobs_done_total{tube=%q} 1", b.Tube)) &&
			strings.Contains(body, "job_duration_seconds_count") &&
			strings.Contains(body, "jobs_in_flight 0") &&
			strings.Contains(body, "go_goroutines")
	}, 5*time.Second, 50*time.Millisecond)
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	return string(b)
}

// MONGO_SERVER overrides what buildInfo says: devmongo answers as
// FerretDB, and with MONGO_SERVER=mongodb the worker takes MongoDB's
// path, the server-stamped insert and its indexes; by default it asks and
// makes none.
func TestMongoServerChoosesTheStorePath(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		server  string
		indexes []string
	}{
		{"", []string{"_id_"}},
		{"mongodb", []string{"_id_", "completed_at", "stored_at_id"}},
	} {
		t.Run(cmp.Or(tc.server, "auto"), func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			logs := startWorker(t, b.env(map[string]string{"MONGO_SERVER": tc.server}))
			id := put(t, b, b.Tube, `{"example":"data"}`, time.Minute)
			waitGone(t, b, id, 20*time.Second)
			r, err := find(b, id)
			require.NoError(t, err)
			require.Equal(t, "09ee943c4fa33cd5a355eb7a4e38f7ef", r.Hash)
			require.False(t, r.StoredAt.IsZero())
			require.Eventually(t, func() bool { return strings.Contains(logs.String(), "results store ready") }, 10*time.Second, 20*time.Millisecond)
			want := cmp.Or(tc.server, "ferretdb")
			require.Contains(t, logs.String(), "server="+want)
			specs, err := b.Store.Collection().Indexes().ListSpecifications(testenv.Context(t, 5*time.Second))
			require.NoError(t, err)
			var names []string
			for _, s := range specs {
				names = append(names, s.Name)
			}
			slices.Sort(names)
			require.Equal(t, tc.indexes, names)
		})
	}
}

func TestRedeliveredJobIsDeletedWithoutASecondResult(t *testing.T) {
	t.Parallel()
	b := setup(t)
	body := `{"again":true}`
	id := put(t, b, b.Tube, body, time.Minute)
	earlier := job.Result{ID: id, Hash: job.Hash(body), Payload: body, Worker: "earlier-worker", Attempts: 1}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, b.Store.Save(ctx, earlier))

	startWorker(t, b.env(nil))
	waitGone(t, b, id, 20*time.Second)
	require.EqualValues(t, 1, count(t, b))
	r, err := find(b, id)
	require.NoError(t, err)
	require.Equal(t, "earlier-worker", r.Worker, "the stored result is kept")
}

func TestDifferentResultUnderTheSameIDBuriesTheJob(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := put(t, b, b.Tube, `{"new":"job"}`, time.Minute)
	old := job.Result{ID: id, Hash: job.Hash(`{"old":"job"}`), Payload: `{"old":"job"}`, Worker: "before-restart"}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, b.Store.Save(ctx, old))

	logs := startWorker(t, b.env(nil))
	s := waitState(t, b, id, job.StateBuried, 20*time.Second)
	require.EqualValues(t, 1, s.Buries)
	r, err := find(b, id)
	require.NoError(t, err)
	require.Equal(t, old.Payload, r.Payload, "never overwritten")
	require.Equal(t, old.Hash, r.Hash)
	require.Equal(t, "before-restart", r.Worker)
	require.EqualValues(t, 1, count(t, b))
	require.Eventually(t, func() bool {
		l := logs.String()
		return strings.Contains(l, "level=ERROR") && strings.Contains(l, "never overwriting") &&
			strings.Contains(l, fmt.Sprintf("job_id=%d", id)) &&
			strings.Contains(l, "stored_hash="+old.Hash) && strings.Contains(l, "new_hash="+job.Hash(`{"new":"job"}`))
	}, 5*time.Second, 20*time.Millisecond)
}

func TestFailingHandlerIsRetriedThenBuried(t *testing.T) {
	t.Parallel()
	b := setup(t)
	okTube := b.Tube + "-ok"
	startWorker(t, b.env(map[string]string{
		"WORKER_TUBES":        b.Tube + "," + okTube,
		"WORKER_HANDLERS":     b.Tube + ":fail",
		"WORKER_MAX_ATTEMPTS": "3",
		"WORKER_RETRY_BASE":   "50ms",
		"WORKER_RETRY_MAX":    "200ms",
	}))
	failing := put(t, b, b.Tube, `{"doomed":1}`, time.Minute)
	fine := put(t, b, okTube, `{"fine":1}`, time.Minute)

	s := waitState(t, b, failing, job.StateBuried, 20*time.Second)
	require.EqualValues(t, 3, s.Reserves)
	require.EqualValues(t, 2, s.Releases)
	_, err := find(b, failing)
	require.ErrorIs(t, err, store.ErrNotFound)

	// The other tube's jobs get the default handler.
	waitGone(t, b, fine, 20*time.Second)
	r, err := find(b, fine)
	require.NoError(t, err)
	require.Equal(t, job.Hash(`{"fine":1}`), r.Hash)
}

func TestMongoDownReleasesJobsAndNeverBuriesThem(t *testing.T) {
	t.Parallel()
	b := setup(t)
	mongo := testenv.StartMongo(t)
	b.Store = store.NewResults(mongo.Client(), b.DB, "completed")
	mongo.Stop()

	// Started while MongoDB is down: the worker must come up all the same.
	logs := startWorker(t, b.env(map[string]string{
		"MONGO_URL":            mongo.URL,
		"WORKER_CONCURRENCY":   "2",
		"WORKER_MAX_ATTEMPTS":  "1",
		"WORKER_RETRY_BASE":    "1s",
		"WORKER_RETRY_MAX":     "2s",
		"WORKER_STORE_TIMEOUT": "300ms",
		"LOG_LEVEL":            "warn",
	}))
	var ids []uint64
	for i := range 4 {
		ids = append(ids, put(t, b, b.Tube, fmt.Sprintf(`{"while_down":%d}`, i), time.Minute))
	}
	// Every job is tried and released more than once, and none is buried,
	// though one attempt is all that a failing handler would get.
	require.Eventually(t, func() bool {
		for _, id := range ids {
			s, err := statsJob(b, id)
			require.NoError(t, err)
			require.Zero(t, s.Buries, "job %d buried", id)
			if s.Releases < 2 {
				return false
			}
		}
		return true
	}, 30*time.Second, 50*time.Millisecond)
	require.NoError(t, mongo.Restart())

	for _, id := range ids {
		waitGone(t, b, id, 30*time.Second)
		r, err := find(b, id)
		require.NoError(t, err)
		require.Equal(t, job.Hash(r.Payload), r.Hash)
		require.Greater(t, r.Attempts, 2)
	}
	require.EqualValues(t, len(ids), count(t, b))
	l := logs.String()
	require.Contains(t, l, "MongoDB unavailable")
	require.NotContains(t, l, "burying")
}

func TestBeanstalkdOutageIsLoggedOnceAndSurvived(t *testing.T) {
	t.Parallel()
	b := setup(t)
	bs := testenv.StartBeanstalkd(t, testenv.BeanstalkdOptions{})
	b.Beanstalk = bs
	b.Queue = queue.NewPool(queue.PoolConfig{Addr: bs.Addr()})
	t.Cleanup(func() { b.Queue.Close() })

	logs := startWorker(t, b.env(map[string]string{"WORKER_CONCURRENCY": "3"}))
	first := put(t, b, b.Tube, `{"before":1}`, time.Minute)
	waitGone(t, b, first, 20*time.Second)

	bs.Kill()
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "beanstalkd unavailable") },
		10*time.Second, 20*time.Millisecond)
	time.Sleep(2500 * time.Millisecond) // let the reservers retry a few times while it is down
	require.NoError(t, bs.Restart())
	b.Queue = queue.NewPool(queue.PoolConfig{Addr: bs.Addr()}) // the old one holds dead connections
	t.Cleanup(func() { b.Queue.Close() })

	body := `{"after":1}`
	second := put(t, b, b.Tube, body, time.Minute)
	require.Eventually(t, func() bool {
		_, err := find(b, second)
		return err == nil
	}, 20*time.Second, 20*time.Millisecond)
	// beanstalkd lost its jobs and restarted the ids without a binlog: the
	// second job may reuse the first's id, and is then buried as a conflict.
	if second != first {
		r, err := find(b, second)
		require.NoError(t, err)
		require.Equal(t, body, r.Payload)
	}
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "beanstalkd available again") },
		10*time.Second, 20*time.Millisecond)
	require.Equal(t, 1, strings.Count(logs.String(), "beanstalkd unavailable"), logs.String())
}

func TestLongWorkIsTouched(t *testing.T) {
	t.Parallel()
	b := setup(t)
	startWorker(t, b.env(map[string]string{"WORK_DELAY": "3s", "WORKER_CONCURRENCY": "2"}))
	id := put(t, b, b.Tube, `{"slow":true}`, time.Second)

	// Watch the job while it runs: a missed touch shows as a timeout.
	var last job.Stats
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		s, err := statsJob(b, id)
		if isNotFound(err) {
			break
		}
		require.NoError(t, err)
		require.Zero(t, s.Timeouts, "the reservation ran out: %+v", s)
		require.LessOrEqual(t, s.Reserves, uint64(1), "%+v", s)
		last = s
		time.Sleep(100 * time.Millisecond)
	}
	require.Equal(t, job.StateReserved, last.State, "the job was seen in work")
	r, err := find(b, id)
	require.NoError(t, err)
	require.Equal(t, 1, r.Attempts)
	require.GreaterOrEqual(t, r.DurationMS, 3000.0)
}

func TestThousandJobsThroughThreeWorkers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const n = 1000
	ids := make(map[uint64]string, n)
	for i := range n {
		body := fmt.Sprintf(`{"n":%d,"text":"job number %d"}`, i, i)
		ids[put(t, b, b.Tube, body, time.Minute)] = body
	}
	for i := range 3 {
		startWorker(t, b.env(map[string]string{
			"WORKER_CONCURRENCY": "2",
			"WORKER_ID":          fmt.Sprintf("w%d", i),
			"LOG_LEVEL":          "warn",
		}))
	}
	require.Eventually(t, func() bool { return count(t, b) >= n }, 90*time.Second, 200*time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cur, err := b.Store.Collection().Find(ctx, map[string]any{})
	require.NoError(t, err)
	var all []job.Result
	require.NoError(t, cur.All(ctx, &all))
	require.Len(t, all, n)
	workers := map[string]int{}
	for _, r := range all {
		body, ok := ids[r.ID]
		require.True(t, ok, "result %d is not one of the jobs", r.ID)
		require.Equal(t, body, r.Payload)
		require.Equal(t, job.Hash(body), r.Hash)
		workers[r.Worker]++
	}
	require.Len(t, workers, 3, "every worker took part: %v", workers)

	require.Eventually(t, func() bool {
		tubes, err := b.Queue.Tubes(ctx)
		require.NoError(t, err)
		s := tubes[b.Tube]
		return s.Ready == 0 && s.Reserved == 0 && s.Delayed == 0 && s.Buried == 0
	}, 10*time.Second, 50*time.Millisecond)
}

// Package faults_test turns what can go wrong in production into tests
// against real processes: workers, queues and databases killed or
// restarted under running services. Each test states the promise it
// checks in its comment.
package faults_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/beanstalkd/go-beanstalk"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/queue"
	"github.com/jobsys/jobs/pkg/store"
	"github.com/jobsys/jobs/pkg/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// 1. A worker killed with SIGKILL in the middle of a job: the job is
// reserved again by another worker, there is exactly one result, and an `all` subscriber
// sees one completion.
func TestWorkerKilledMidJob(t *testing.T) {
	t.Parallel()
	b := testenv.Setup(t)
	s := testenv.StartStack(t, b, testenv.StackOptions{WorkerEnv: map[string]string{"WORK_DELAY": "2s"}})
	sub := subscribe(t, s.NotifierURL)

	id := post(t, s, "?tube="+b.Tube+"&ttr=3", `{"kill":"me"}`)
	require.Eventually(t, func() bool {
		_, m := get(t, s, id)
		return m["state"] == "reserved"
	}, 10*time.Second, 20*time.Millisecond)
	s.Workers[0].Kill()
	s.AddWorker()

	require.Eventually(t, func() bool { return countResults(t, s) == 1 }, 20*time.Second, 50*time.Millisecond)
	rs := results(t, s)
	require.Len(t, rs, 1)
	require.Equal(t, job.Hash(`{"kill":"me"}`), rs[id].Hash)
	// The second worker ran it. attempts stays 1: a run cut off by a
	// crash ends as a reserve on a closed connection, which beanstalkd
	// cannot tell from a reserve the worker never saw (docs/results.md).
	require.Equal(t, "worker-2", rs[id].Worker, "the job was reserved again by the new worker")
	require.Equal(t, 1, rs[id].Attempts)
	require.Eventually(t, func() bool { return sub.times(id) == 1 }, 5*time.Second, 20*time.Millisecond)
	time.Sleep(time.Second) // a duplicate would arrive within the next poll rounds
	require.Equal(t, 1, sub.times(id))
}

// 2. A job that outlives its TTR without touching (a worker stalled in a
// GC pause or cut off by the network): it is redelivered, the stalled
// worker's late delete gets NOT_FOUND and does no harm, and the result is
// stored once.
//
// The stalled connection stays open and sends one command after its TTR,
// list-tubes, which touches nothing. beanstalkd (1.12, and 1.13 as well)
// often never expires a reservation while the connection holding it is
// completely idle: stats-job then shows the job reserved with a negative
// time-left and no timeout counted, until that connection sends anything
// or closes. Measured here with 20 concurrent copies of this scenario on
// one server, the idle holder kept 23 to 44 of 200 jobs past their TTR
// for good on 1.12 (12 of 200 on 1.13); with one harmless command after
// the TTR (list-tubes-watched there), 0 of 200. Without it this test
// failed 3 times in 7 full runs on the shared test server, and once in 4
// runs on a server of its own (README, "Known limits").
func TestTTRExpiredLateDelete(t *testing.T) {
	t.Parallel()
	b := testenv.Setup(t)
	s := testenv.StartStack(t, b, testenv.StackOptions{Workers: -1, NoNotifier: true,
		WorkerEnv: map[string]string{"LOG_LEVEL": "debug"}}) // its log is printed if the redelivery never comes

	id := post(t, s, "?tube="+b.Tube+"&ttr=1", `{"slow":true}`)
	stalled, err := beanstalk.Dial("tcp", b.Beanstalk.Addr())
	require.NoError(t, err)
	defer stalled.Close()
	rid, body, err := beanstalk.NewTubeSet(stalled, b.Tube).Reserve(5 * time.Second)
	require.NoError(t, err)
	require.Equal(t, id, rid)
	reservedAt := time.Now()

	// The stalled worker does not touch; after the TTR a real worker takes
	// the job and finishes it.
	s.AddWorker()
	time.Sleep(time.Until(reservedAt.Add(1500 * time.Millisecond)))
	_, err = stalled.ListTubes()
	require.NoError(t, err)
	require.Eventually(t, func() bool { return countResults(t, s) == 1 }, 20*time.Second, 50*time.Millisecond)

	// The stalled worker wakes up and does what the worker does: store,
	// then delete.
	client, err := store.Connect(b.Mongo.URL, "stalled", 2*time.Second)
	require.NoError(t, err)
	defer client.Disconnect(context.Background())
	res := store.NewResults(client, b.DB, "completed")
	late := job.Result{ID: id, Hash: job.Hash(string(body)), Payload: string(body), CompletedAt: time.Now().UTC().Truncate(time.Millisecond)}
	require.ErrorIs(t, res.Save(testenv.Context(t, 5*time.Second), late), store.ErrAlreadyStored)
	require.ErrorIs(t, stalled.Delete(id), beanstalk.ErrNotFound)

	rs := results(t, s)
	require.Len(t, rs, 1)
	require.Equal(t, 2, rs[id].Attempts)
	require.NotEqual(t, "", rs[id].Worker)
	require.Equal(t, job.Hash(`{"slow":true}`), rs[id].Hash)
}

// 3. beanstalkd killed with SIGKILL while running with its binlog: after
// the restart every acknowledged job is there, reserved jobs come back as
// ready, and the services reconnect by themselves.
func TestBeanstalkdKilledWithBinlog(t *testing.T) {
	t.Parallel()
	b := testenv.Setup(t)
	b.Beanstalk = testenv.StartBeanstalkd(t, testenv.BeanstalkdOptions{BinlogDir: t.TempDir(), FsyncMS: 0})
	s := testenv.StartStack(t, b, testenv.StackOptions{Workers: -1, NoNotifier: true})

	var ids []uint64
	for i := range 20 {
		ids = append(ids, post(t, s, "?tube="+b.Tube, fmt.Sprintf(`{"n":%d}`, i)))
	}
	held := queue.NewConsumer(b.Beanstalk.Addr(), []string{b.Tube}, 0)
	for range 5 {
		_, err := held.Reserve(testenv.Context(t, 5*time.Second), time.Second)
		require.NoError(t, err)
	}

	b.Beanstalk.Kill()
	held.Close()
	require.NoError(t, b.Beanstalk.Restart())

	pool := b.Pool(t)
	for _, id := range ids {
		st, err := pool.StatsJob(testenv.Context(t, 5*time.Second), id)
		require.NoError(t, err, "acknowledged job %d lost", id)
		require.Equal(t, job.StateReady, st.State, "job %d", id)
	}

	// The manager reconnects by itself.
	require.Eventually(t, func() bool {
		resp, err := httpClient.Post(s.ManagerURL+"/?tube="+b.Tube, "application/json", strings.NewReader(`{"after":"restart"}`))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusCreated
	}, 10*time.Second, 100*time.Millisecond)

	s.AddWorker()
	require.Eventually(t, func() bool { return countResults(t, s) == 21 }, 30*time.Second, 100*time.Millisecond)
}

// 4. beanstalkd restarted without its binlog starts its ids at 1 again:
// the manager fences the ids, so a new job never answers with an old
// job's result, and no stored result is overwritten.
func TestBeanstalkdRestartWithoutBinlogFencesIDs(t *testing.T) {
	t.Parallel()
	b := testenv.Setup(t)
	b.Beanstalk = testenv.StartBeanstalkd(t, testenv.BeanstalkdOptions{})
	s := testenv.StartStack(t, b, testenv.StackOptions{NoNotifier: true})

	var old []uint64
	for i := range 5 {
		old = append(old, post(t, s, "?tube="+b.Tube, fmt.Sprintf(`{"old":%d}`, i)))
	}
	require.Eventually(t, func() bool { return countResults(t, s) == 5 }, 20*time.Second, 50*time.Millisecond)
	before := results(t, s)

	b.Beanstalk.Stop()
	require.NoError(t, b.Beanstalk.Restart())

	var id uint64
	require.Eventually(t, func() bool {
		resp, err := httpClient.Post(s.ManagerURL+"/?tube="+b.Tube, "application/json", strings.NewReader(`{"new":true}`))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			return false
		}
		var out struct{ ID uint64 }
		require.NoError(t, jsonDecode(resp, &out))
		id = out.ID
		return true
	}, 15*time.Second, 100*time.Millisecond)
	require.Greater(t, id, old[len(old)-1], "the new job reused an old id")

	require.Eventually(t, func() bool {
		code, m := get(t, s, id)
		return code == http.StatusOK && m["payload"] == `{"new":true}`
	}, 20*time.Second, 50*time.Millisecond)
	after := results(t, s)
	for _, oid := range old {
		require.Equal(t, before[oid], after[oid], "result %d changed", oid)
	}
}

// 5. beanstalkd unreachable: POST answers 503 with Retry-After within 2
// seconds, nothing hangs, and service resumes when it returns.
func TestBeanstalkdUnreachable(t *testing.T) {
	t.Parallel()
	b := testenv.Setup(t)
	b.Beanstalk = testenv.StartBeanstalkd(t, testenv.BeanstalkdOptions{})
	s := testenv.StartStack(t, b, testenv.StackOptions{Workers: -1, NoNotifier: true})
	post(t, s, "", `{"before":1}`)
	goroutinesBefore := goroutines(t, s.ManagerURL)

	b.Beanstalk.Stop()
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			resp, err := httpClient.Post(s.ManagerURL+"/", "application/json", strings.NewReader(`{"while":"down"}`))
			if !assert.NoError(t, err) {
				return
			}
			var out map[string]any
			assert.NoError(t, jsonDecode(resp, &out))
			assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, out)
			assert.NotEmpty(t, resp.Header.Get("Retry-After"))
			assert.NotEmpty(t, out["error"])
			assert.Less(t, time.Since(start), 2500*time.Millisecond)
		}()
	}
	wg.Wait()

	require.NoError(t, b.Beanstalk.Restart())
	require.Eventually(t, func() bool {
		resp, _ := do(t, http.MethodPost, s.ManagerURL+"/", `{"after":1}`)
		return resp.StatusCode == http.StatusCreated
	}, 10*time.Second, 100*time.Millisecond)
	require.Eventually(t, func() bool { return goroutines(t, s.ManagerURL) <= goroutinesBefore+5 },
		10*time.Second, 100*time.Millisecond, "goroutines leaked: before %d", goroutinesBefore)
}

// 6. MongoDB down for ten seconds: workers retry, no job is lost or
// buried for that reason, all results appear once it returns, and a
// subscriber misses nothing.
func TestMongoDownTenSeconds(t *testing.T) {
	t.Parallel()
	b := testenv.Setup(t)
	b.Mongo = testenv.StartMongo(t)
	s := testenv.StartStack(t, b, testenv.StackOptions{WorkerEnv: map[string]string{
		"WORKER_MAX_ATTEMPTS": "1", "WORKER_RETRY_BASE": "200ms", "WORKER_STORE_TIMEOUT": "500ms",
	}})
	sub := subscribe(t, s.NotifierURL)
	post(t, s, "?tube="+b.Tube, `{"warm":"up"}`)
	require.Eventually(t, func() bool { n, _ := sub.counts(); return n == 1 }, 10*time.Second, 20*time.Millisecond)

	b.Mongo.Stop()
	var ids []uint64
	for i := range 20 {
		ids = append(ids, post(t, s, "?tube="+b.Tube, fmt.Sprintf(`{"during":%d}`, i)))
	}
	time.Sleep(10 * time.Second) // the outage the promise is about
	pool := b.Pool(t)
	tubes, err := pool.Tubes(testenv.Context(t, 5*time.Second))
	require.NoError(t, err)
	require.Zero(t, tubes[b.Tube].Buried, "jobs buried because the database was down")
	require.NoError(t, b.Mongo.Restart())

	require.Eventually(t, func() bool { return countResults(t, s) == 21 }, 30*time.Second, 200*time.Millisecond)
	require.Eventually(t, func() bool { n, _ := sub.counts(); return n == 21 }, 15*time.Second, 50*time.Millisecond)
	_, dups := sub.counts()
	require.Empty(t, dups)
	for _, id := range ids {
		require.Equal(t, 1, sub.times(id), "job %d", id)
	}
}

// 7. The notifier killed and restarted: a client reconnecting with its
// cursor gets every completion once.
func TestNotifierKilledAndRestarted(t *testing.T) {
	t.Parallel()
	b := testenv.Setup(t)
	s := testenv.StartStack(t, b, testenv.StackOptions{})
	sub := subscribe(t, s.NotifierURL)
	for i := range 10 {
		post(t, s, "?tube="+b.Tube, fmt.Sprintf(`{"before":%d}`, i))
	}
	require.Eventually(t, func() bool { n, _ := sub.counts(); return n == 10 }, 15*time.Second, 20*time.Millisecond)

	s.Notifier.Kill()
	for i := range 30 {
		post(t, s, "?tube="+b.Tube, fmt.Sprintf(`{"while":%d}`, i))
	}
	require.Eventually(t, func() bool { return countResults(t, s) == 40 }, 20*time.Second, 50*time.Millisecond)
	require.NoError(t, s.Notifier.Restart())
	for i := range 10 {
		post(t, s, "?tube="+b.Tube, fmt.Sprintf(`{"after":%d}`, i))
	}

	require.Eventually(t, func() bool { n, _ := sub.counts(); return n == 50 }, 20*time.Second, 50*time.Millisecond)
	time.Sleep(time.Second)
	n, dups := sub.counts()
	require.Equal(t, 50, n)
	require.Empty(t, dups, "completions delivered twice")
	require.Zero(t, sub.gaps)
}

// 8. A job that always fails is buried after WORKER_MAX_ATTEMPTS, shows as
// buried, PATCH kicks it back, and DELETE removes it; a reserved job
// cannot be deleted.
func TestFailingJobBuriedKickedDeleted(t *testing.T) {
	t.Parallel()
	b := testenv.Setup(t)
	slow := "slow-" + b.Tube
	s := testenv.StartStack(t, b, testenv.StackOptions{NoNotifier: true, WorkerEnv: map[string]string{
		"WORKER_HANDLERS":     b.Tube + ":fail",
		"WORKER_MAX_ATTEMPTS": "2",
		"WORKER_RETRY_BASE":   "100ms",
	}})

	id := post(t, s, "?tube="+b.Tube, `{"doomed":true}`)
	buried := func() bool { _, m := get(t, s, id); return m["state"] == "buried" }
	require.Eventually(t, buried, 15*time.Second, 50*time.Millisecond)
	_, m := get(t, s, id)
	require.EqualValues(t, 2, m["reserves"])
	kicks := m["kicks"].(float64) // the id fence's kick, when it held the new job

	resp, body := do(t, http.MethodPatch, fmt.Sprintf("%s/%d/", s.ManagerURL, id), `{"state":"ready"}`)
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	require.Eventually(t, func() bool { _, m := get(t, s, id); return m["kicks"] == kicks+1 && m["state"] == "buried" },
		15*time.Second, 50*time.Millisecond, "kicked job should fail again and be buried again")

	resp, body = do(t, http.MethodDelete, fmt.Sprintf("%s/%d/", s.ManagerURL, id), "")
	require.Equal(t, http.StatusNoContent, resp.StatusCode, body)
	code, _ := get(t, s, id)
	require.Equal(t, http.StatusNotFound, code)
	require.Empty(t, results(t, s))

	// A reserved job: 409.
	s2 := testenv.StartStack(t, b, testenv.StackOptions{NoNotifier: true, WorkerEnv: map[string]string{"WORKER_TUBES": slow, "WORK_DELAY": "5s"}})
	rid := post(t, s2, "?tube="+slow, `{"busy":true}`)
	require.Eventually(t, func() bool { _, m := get(t, s2, rid); return m["state"] == "reserved" }, 10*time.Second, 20*time.Millisecond)
	resp, body = do(t, http.MethodDelete, fmt.Sprintf("%s/%d/", s2.ManagerURL, rid), "")
	require.Equal(t, http.StatusConflict, resp.StatusCode, body)
}

// 9. SIGTERM to each service during load: in-flight work finishes or is
// released, and no request fails while the manager drains (it answers
// with "Connection: close" for a second before it stops listening; only
// connections made after that, which it never accepted, are refused).
func TestSIGTERMDuringLoad(t *testing.T) {
	t.Parallel()
	b := testenv.Setup(t)
	s := testenv.StartStack(t, b, testenv.StackOptions{Workers: 2, WorkerEnv: map[string]string{
		"WORK_DELAY": "20ms", "WORKER_SHUTDOWN_GRACE": "2s", "WORKER_CONCURRENCY": "4",
	}})

	// Load on the manager while it is stopped: every request gets its 201
	// until the manager stops listening.
	var (
		mu            sync.Mutex
		accepted      []uint64
		stopping      = make(chan struct{})
		wg            sync.WaitGroup
		managerTermAt time.Time
	)
	const managerDrain = 900 * time.Millisecond // the manager drains for a second after SIGTERM
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 10 * time.Second}
			for i := 0; ; i++ {
				select {
				case <-stopping:
					return
				default:
				}
				resp, err := client.Post(s.ManagerURL+"/?tube="+b.Tube, "application/json", strings.NewReader(fmt.Sprintf(`{"i":%d}`, i)))
				if err != nil {
					// Once the manager stops listening, connections that
					// were never accepted are refused or reset by the
					// kernel: those requests never reached it. Before that,
					// during its drain, nothing may fail.
					mu.Lock()
					closing := !managerTermAt.IsZero() && time.Since(managerTermAt) >= managerDrain
					mu.Unlock()
					if closing {
						return
					}
					t.Errorf("request failed while the manager was still serving: %v", err)
					return
				}
				var out struct{ ID uint64 }
				assert.Equal(t, http.StatusCreated, resp.StatusCode)
				assert.NoError(t, jsonDecode(resp, &out))
				mu.Lock()
				accepted = append(accepted, out.ID)
				mu.Unlock()
				time.Sleep(25 * time.Millisecond) // steady load, not a flood the one worker left needs minutes for
			}
		}()
	}
	time.Sleep(time.Second)
	s.Workers[0].Stop()
	require.Zero(t, s.Workers[0].ExitCode())
	s.Notifier.Stop()
	require.Zero(t, s.Notifier.ExitCode())
	mu.Lock()
	managerTermAt = time.Now()
	mu.Unlock()
	s.Manager.Stop()
	require.Zero(t, s.Manager.ExitCode())
	close(stopping)
	wg.Wait()
	require.NotEmpty(t, accepted)

	// Every accepted job is done by the worker that is left, exactly once.
	require.Eventually(t, func() bool { return countResults(t, s) == len(accepted) }, 60*time.Second, 100*time.Millisecond,
		"%d jobs accepted", len(accepted))
	rs := results(t, s)
	for _, id := range accepted {
		require.Contains(t, rs, id)
	}
}

func jsonDecode(resp *http.Response, v any) error {
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

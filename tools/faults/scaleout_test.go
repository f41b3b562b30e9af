package faults_test

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/procs"
	"github.com/jobsys/jobs/pkg/testenv"
)

// 9. Scaled out (issue 25): 3 managers, 3 workers and 2 notifiers on one
// beanstalkd and one database. beanstalkd is restarted without its
// binlog while workers hold jobs, and a manager is restarted: every id a
// POST got is distinct, every accepted job completes exactly once with
// its own payload, and each notifier's subscriber sees every completion
// once.
func TestScaleOutAcrossRestarts(t *testing.T) {
	t.Parallel()
	b := testenv.Setup(t)
	b.Beanstalk = testenv.StartBeanstalkd(t, testenv.BeanstalkdOptions{}) // no binlog: restarts count ids from 1
	s := testenv.StartStack(t, b, testenv.StackOptions{Workers: 3,
		WorkerEnv:   map[string]string{"WORK_DELAY": "1s"},
		NotifierEnv: map[string]string{"NOTIFIER_ID": "notifier-1"}})
	managers := []*testenv.Service{s.Manager,
		testenv.ServeService(t, testenv.Build(t, "./services/manager"), procs.Manager, b.Vars()),
		testenv.ServeService(t, testenv.Build(t, "./services/manager"), procs.Manager, b.Vars())}
	env := b.Vars()
	maps.Copy(env, procs.NotifierEnv(s.ManagerURL))
	env["NOTIFIER_ID"] = "notifier-2"
	notifier2 := testenv.ServeService(t, testenv.Build(t, "./services/notifier"), procs.Notifier, env)
	subs := []*subscriber{subscribe(t, s.NotifierURL), subscribe(t, notifier2.URL)}

	payloads := map[uint64]string{} // by the id a POST answered
	n := 0
	postRound := func(count int) {
		for range count {
			m := managers[n%len(managers)]
			body := fmt.Sprintf(`{"n":%d}`, n)
			n++
			var id uint64
			require.Eventually(t, func() bool { // 503 while beanstalkd or a manager comes back
				id = postTo(t, m.URL+"/?tube="+b.Tube, body)
				return id != 0
			}, 20*time.Second, 50*time.Millisecond, "POST %s to %s", body, m.URL)
			prev, dup := payloads[id]
			require.False(t, dup, "id %d handed out twice: %s and %s", id, prev, body)
			payloads[id] = body
		}
	}

	// One job held by each worker, then beanstalkd restarted empty.
	postRound(3)
	require.Eventually(t, func() bool {
		// Being worked, past the reserve's stats-job: a job whose
		// stats-job fails is handed back, and lost with beanstalkd.
		held := 0.0
		for _, w := range s.Workers {
			held += metric(t, w.URL, "jobs_in_flight")
		}
		return held == 3
	}, 10*time.Second, 20*time.Millisecond, "the workers hold the jobs")
	b.Beanstalk.Stop()
	require.NoError(t, b.Beanstalk.Restart())
	postRound(9)

	// A manager restarted.
	managers[1].Stop()
	require.NoError(t, managers[1].Restart())
	postRound(6)

	if !assert.Eventually(t, func() bool { return countResults(t, s) >= len(payloads) }, 60*time.Second, 100*time.Millisecond) {
		rs := results(t, s)
		for id := range payloads {
			if _, ok := rs[id]; !ok {
				code, m := get(t, s, id)
				t.Errorf("job %d (%s) not completed: GET %d %v", id, payloads[id], code, m)
			}
		}
		for i, w := range s.Workers {
			t.Logf("worker %d log:\n%s", i+1, w.Logs())
		}
		for i, m := range managers {
			t.Logf("manager %d log:\n%s", i+1, m.Logs())
		}
		t.FailNow()
	}
	rs := results(t, s) // fails on a result stored twice
	require.Len(t, rs, len(payloads))
	for id, body := range payloads {
		require.Contains(t, rs, id)
		assert.Equal(t, job.Hash(body), rs[id].Hash, "job %d completed with its own payload %s", id, body)
	}
	for i, sub := range subs {
		require.Eventually(t, func() bool {
			for id := range payloads {
				if sub.times(id) == 0 {
					return false
				}
			}
			return true
		}, 20*time.Second, 50*time.Millisecond, "notifier %d's subscriber sees every completion", i+1)
		time.Sleep(500 * time.Millisecond) // a duplicate would come within this
		for id := range payloads {
			assert.Equal(t, 1, sub.times(id), "notifier %d: completions of job %d", i+1, id)
		}
	}
}

// postTo posts body to u and returns the new id, or 0 on a 503.
func postTo(t *testing.T, u, body string) uint64 {
	t.Helper()
	resp, err := httpClient.Post(u, "application/json", strings.NewReader(body))
	if err != nil {
		return 0 // a manager restarting
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusServiceUnavailable {
		return 0
	}
	require.Equal(t, http.StatusCreated, resp.StatusCode, "POST %s: %s", u, b)
	var out struct{ ID uint64 }
	require.NoError(t, json.Unmarshal(b, &out))
	return out.ID
}

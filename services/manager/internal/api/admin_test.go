package api_test

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/queue"
	"github.com/jobsys/jobs/pkg/store"
	"github.com/jobsys/jobs/services/manager/internal/api"
)

var (
	_ api.Admin  = (*queue.Pool)(nil)
	_ api.Lister = (*store.Results)(nil)
)

// buryAll reserves every ready job of tube and buries it, as a worker
// whose handler always fails does in the end.
func buryAll(t *testing.T, b bundle) {
	t.Helper()
	c := queue.NewConsumer(b.Beanstalk.Addr(), []string{b.Tube}, 2*time.Second)
	defer c.Close()
	for {
		r, err := c.Reserve(ctx(t), 0)
		if err != nil {
			return
		}
		require.NoError(t, c.Bury(ctx(t), r.ID, 0))
	}
}

// The operations API, as the check tries it: tubes, peeks, kick,
// pause, POST under /tubes, and a completed job run again.
func TestOperationsAPI(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	tubeURL := b.URL + "/tubes/" + url.PathEscape(b.Tube)
	var ids []uint64
	for i := range 3 {
		ids = append(ids, post(t, b, "tube="+b.Tube, fmt.Sprintf(`{"n":%d}`, i)).ID)
	}

	list := decode[api.TubeList](t, do(t, "GET", b.URL+"/tubes", ""))
	var mine *queue.TubeInfo
	for i := range list.Tubes {
		if list.Tubes[i].Name == b.Tube {
			mine = &list.Tubes[i]
		}
	}
	require.NotNil(t, mine, "GET /tubes lists the tube")
	require.Equal(t, uint64(3), mine.CurrentJobsReady)

	ready := decode[api.JobList](t, do(t, "GET", b.URL+"/jobs?state=ready&tube="+b.Tube, ""))
	require.Equal(t, uint64(3), *ready.Count)
	require.Len(t, ready.Jobs, 1, "beanstalkd shows the next ready job")
	require.Equal(t, ids[0], ready.Jobs[0].ID)
	require.Equal(t, `{"n":0}`, ready.Jobs[0].Payload)

	buryAll(t, b)
	r := do(t, "GET", tubeURL, "")
	require.Equal(t, http.StatusOK, r.StatusCode, "%s", r.Body)
	raw := decode[map[string]any](t, r)
	for _, k := range []string{"name", "currentJobsBuried", "currentJobsReady", "pause", "pauseTimeLeft", "totalJobs", "next"} {
		require.Contains(t, raw, k, "GET /tubes/T has camelCase keys")
	}
	detail := decode[api.TubeDetail](t, r)
	require.Equal(t, uint64(3), detail.CurrentJobsBuried)
	require.Equal(t, ids[0], detail.Next["buried"].ID)
	require.Nil(t, detail.Next["ready"])

	r = do(t, "PATCH", tubeURL, `{"kick":100}`)
	require.Equal(t, http.StatusOK, r.StatusCode, "%s", r.Body)
	require.JSONEq(t, `{"kicked":3}`, string(r.Body))

	r = do(t, "PATCH", tubeURL, `{"pause":"30s"}`)
	require.Equal(t, http.StatusOK, r.StatusCode, "%s", r.Body)
	detail = decode[api.TubeDetail](t, do(t, "GET", tubeURL, ""))
	require.Equal(t, uint64(30), detail.Pause)
	require.Positive(t, detail.PauseTimeLeft)
	r = do(t, "PATCH", tubeURL, `{"pause":"0s"}`)
	require.Equal(t, http.StatusOK, r.StatusCode, "%s", r.Body)
	require.Zero(t, decode[api.TubeDetail](t, r).Pause, "0s resumes")

	t.Log("POST anywhere still enqueues, /tubes/T included")
	r = do(t, "POST", tubeURL+"?tube="+b.Tube, `{"posted":"under /tubes"}`)
	require.Equal(t, http.StatusCreated, r.StatusCode, "%s", r.Body)
	require.Equal(t, b.Tube, decode[api.Created](t, r).Tube)
	r = do(t, "POST", b.URL+"/jobs?tube="+b.Tube, `{"posted":"to /jobs"}`)
	require.Equal(t, http.StatusCreated, r.StatusCode, "%s", r.Body)

	t.Log("a completed job runs again under a new id")
	done := job.Result{ID: ids[2] + 1000, Hash: job.Hash(`{"again":1}`), Payload: `{"again":1}`, Tube: b.Tube, CompletedAt: time.Now()}
	require.NoError(t, b.Results.Save(ctx(t), done))
	r = do(t, "PATCH", b.URL+"/"+strconv.FormatUint(done.ID, 10)+"/", `{"state":"ready"}`)
	require.Equal(t, http.StatusCreated, r.StatusCode, "%s", r.Body)
	again := decode[api.Created](t, r)
	require.NotEqual(t, done.ID, again.ID)
	require.Equal(t, api.Created{ID: again.ID, Tube: b.Tube, State: job.StateReady}, again)
	require.Equal(t, "/"+strconv.FormatUint(again.ID, 10)+"/", r.Header.Get("Location"))
	body, err := b.Pool.Peek(ctx(t), again.ID)
	require.NoError(t, err)
	require.Equal(t, done.Payload, string(body), "the same payload")
}

// GET /jobs?state=completed pages through the results newest first.
func TestCompletedList(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	for i := range 5 {
		tube := b.Tube
		if i == 2 {
			tube = "elsewhere"
		}
		p := fmt.Sprintf(`{"i":%d}`, i)
		require.NoError(t, b.Results.Save(ctx(t), job.Result{ID: uint64(100 + i), Hash: job.Hash(p), Payload: p, Tube: tube,
			Worker: "w", Attempts: 1, CompletedAt: time.Now()}))
		time.Sleep(2 * time.Millisecond) // distinct stored_at
	}
	page := decode[api.JobList](t, do(t, "GET", b.URL+"/jobs?state=completed&tube="+b.Tube+"&limit=2", ""))
	require.Equal(t, []uint64{104, 103}, listedIDs(page))
	require.Equal(t, `{"i":4}`, page.Jobs[0].Payload)
	require.Equal(t, job.StateCompleted, page.Jobs[0].State)
	require.NotEmpty(t, page.Next)
	require.Nil(t, page.Total, "no total for one tube")
	page = decode[api.JobList](t, do(t, "GET", b.URL+"/jobs?state=completed&tube="+b.Tube+"&limit=2&after="+url.QueryEscape(page.Next), ""))
	require.Equal(t, []uint64{101, 100}, listedIDs(page))
	require.Empty(t, page.Next, "the last page has no next")

	all := decode[api.JobList](t, do(t, "GET", b.URL+"/jobs/?state=completed", ""))
	require.Equal(t, []uint64{104, 103, 102, 101, 100}, listedIDs(all))
	require.EqualValues(t, 5, *all.Total, "the all-time total")
	newest, err := b.Results.Find(ctx(t), 104)
	require.NoError(t, err)
	require.Equal(t, string(job.CursorOf(newest)), all.Newest, "what the total covers")
}

func listedIDs(l api.JobList) []uint64 {
	out := []uint64{}
	for _, j := range l.Jobs {
		out = append(out, j.ID)
	}
	return out
}

// Every bad input to the operations API, with its status and message.
func TestOperationsAPIRefusals(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	post(t, b, "tube="+b.Tube, `{}`)
	tubeURL := b.URL + "/tubes/" + b.Tube
	for _, tc := range []struct {
		method, path, body string
		status             int
		msg                string
	}{
		{"GET", "/jobs", "", 400, "state must be one of"},
		{"GET", "/jobs?state=lost", "", 400, "state must be one of"},
		{"GET", "/jobs?state=completed&limit=0", "", 400, "limit must be a whole number from 1 to 200"},
		{"GET", "/jobs?state=completed&limit=201", "", 400, "limit must be a whole number from 1 to 200"},
		{"GET", "/jobs?state=completed&after=yesterday", "", 400, "after: bad cursor"},
		{"GET", "/jobs?state=completed&sort=asc", "", 400, `unknown query parameter "sort"`},
		{"GET", "/jobs?state=completed&tube=-x", "", 400, "bad tube name"},
		{"GET", "/jobs?state=ready", "", 400, "tube is required for state=ready"},
		{"GET", "/jobs?state=ready&tube=" + b.Tube + "&after=1-1", "", 400, "after: beanstalkd lists no ready jobs"},
		{"GET", "/tubes/no-such-tube-" + b.Tube, "", 404, "not found"},
		{"GET", "/tubes/-bad", "", 400, "must not start with a hyphen"},
		{"PATCH", "/tubes/" + b.Tube, `{}`, 400, `{"kick":N} or {"pause":"30s"}`},
		{"PATCH", "/tubes/" + b.Tube, `{"kick":0}`, 400, `{"kick":N}`},
		{"PATCH", "/tubes/" + b.Tube, `{"kick":1,"pause":"1s"}`, 400, `{"kick":N}`},
		{"PATCH", "/tubes/" + b.Tube, `{"pause":"1.5s"}`, 400, `{"kick":N}`},
		{"PATCH", "/tubes/" + b.Tube, `{"pause":"200h"}`, 400, `{"kick":N}`},
		{"PATCH", "/tubes/" + b.Tube, `{"pause":"-1s"}`, 400, `{"kick":N}`},
		{"PATCH", "/tubes/" + b.Tube, `{"kick":"all"}`, 400, `{"kick":N}`},
		{"PATCH", "/tubes/" + b.Tube, `{"drain":true}`, 400, `{"kick":N}`},
		{"PATCH", "/tubes/" + b.Tube, `{"KICK":1}`, 400, `{"kick":N}`},
		{"PATCH", "/tubes/" + b.Tube, `{"Pause":"1s"}`, 400, `{"kick":N}`},
		{"PATCH", "/tubes/" + b.Tube, `{"pause":"` + strings.Repeat("0", 5000) + `s"}`, 413, "a PATCH body is at most 4096 bytes"},
		{"PATCH", "/tubes/no-such-tube-" + b.Tube, `{"pause":"1s"}`, 404, "not found"},
		{"PATCH", "/tubes", `{"kick":1}`, 405, "method PATCH is not allowed"},
		{"DELETE", "/tubes/" + b.Tube, ``, 405, "method DELETE is not allowed"},
	} {
		r := do(t, tc.method, b.URL+tc.path, tc.body)
		requireError(t, r, tc.status, tc.msg)
	}
	r := do(t, "OPTIONS", tubeURL, "")
	require.Equal(t, "GET, HEAD, OPTIONS, PATCH, POST", r.Header.Get("Allow"))
	r = do(t, "OPTIONS", b.URL+"/jobs", "")
	require.Equal(t, "GET, HEAD, OPTIONS, POST", r.Header.Get("Allow"))
}

// The operations resources need the token whenever API_TOKEN is set, even
// where plain reads do not; count against the rate limit; and refuse a
// write another site's page sends.
func TestOperationsAPIGuards(t *testing.T) {
	t.Parallel()
	b := setup(t, options{cfg: api.Config{Token: "s3cret"}})
	for _, path := range []string{"/jobs?state=completed", "/tubes", "/tubes/default"} {
		requireError(t, do(t, "GET", b.URL+path, ""), http.StatusUnauthorized, "authorization required")
		r := do(t, "GET", b.URL+path, "", "Authorization", "Bearer s3cret")
		require.Equal(t, http.StatusOK, r.StatusCode, "%s: %s", path, r.Body)
	}
	requireError(t, do(t, "PATCH", b.URL+"/tubes/default", `{"kick":1}`), http.StatusUnauthorized, "authorization required")
	r := do(t, "GET", b.URL+"/1/", "")
	require.NotEqual(t, http.StatusUnauthorized, r.StatusCode, "plain reads stay open without PROTECT_READS")

	r = do(t, "PATCH", b.URL+"/tubes/default", `{"kick":1}`, "Authorization", "Bearer s3cret", "Sec-Fetch-Site", "cross-site")
	requireError(t, r, http.StatusForbidden, "cross-origin request refused")

	limited := setup(t, options{cfg: api.Config{RateLimit: 1}})
	statuses := map[int]int{}
	for range 4 {
		statuses[do(t, "GET", limited.URL+"/tubes", "").StatusCode]++
	}
	require.Equal(t, 2, statuses[http.StatusOK], "the burst")
	require.Equal(t, 2, statuses[http.StatusTooManyRequests], "then the limit")
	require.Equal(t, http.StatusOK, do(t, "GET", limited.URL+"/healthz", "").StatusCode, "plain reads are not limited")
}

// recordFailures buries the tube's ready jobs and writes the failure
// records a worker would have, with the error text given.
func recordFailures(t *testing.T, b bundle, state job.FailureState, errText string) []uint64 {
	t.Helper()
	c := queue.NewConsumer(b.Beanstalk.Addr(), []string{b.Tube}, 2*time.Second)
	defer c.Close()
	var ids []uint64
	for {
		r, err := c.Reserve(ctx(t), 0)
		if err != nil {
			break
		}
		if state == job.FailureBuried {
			require.NoError(t, c.Bury(ctx(t), r.ID, 0))
		} else {
			require.NoError(t, c.Release(ctx(t), r.ID, 0, time.Hour))
		}
		require.NoError(t, b.Results.Failures().Record(ctx(t), job.Failure{ID: r.ID, Tube: b.Tube, State: state,
			Payload: string(r.Body), Error: errText, Attempts: 3, Worker: "w1", FailedAt: time.Now()}))
		ids = append(ids, r.ID)
		time.Sleep(2 * time.Millisecond) // distinct failed_at
	}
	return ids
}

// Buried and failed jobs are listed from their failure records, with
// payload and error; a kick or a delete through the API keeps the
// records true.
func TestFailedLists(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	for i := range 3 {
		post(t, b, "tube="+b.Tube, fmt.Sprintf(`{"doomed":%d}`, i))
	}
	buried := recordFailures(t, b, job.FailureBuried, "disk on fire near rack 7")
	require.Len(t, buried, 3)
	post(t, b, "tube="+b.Tube+"&delay=0", `{"flaky":true}`)
	failed := recordFailures(t, b, job.FailureRetrying, "try again")
	require.Len(t, failed, 1)

	list := decode[api.JobList](t, do(t, "GET", b.URL+"/jobs?state=buried&tube="+b.Tube, ""))
	require.Equal(t, []uint64{buried[2], buried[1], buried[0]}, listedIDs(list), "newest first")
	require.Equal(t, `{"doomed":2}`, list.Jobs[0].Payload)
	require.Equal(t, "disk on fire near rack 7", list.Jobs[0].Error)
	require.Equal(t, job.StateBuried, list.Jobs[0].State)
	require.Equal(t, 3, list.Jobs[0].Attempts)
	require.EqualValues(t, 3, *list.Count, "beanstalkd's buried count")

	page := decode[api.JobList](t, do(t, "GET", b.URL+"/jobs?state=buried&tube="+b.Tube+"&limit=2", ""))
	require.Len(t, page.Jobs, 2)
	page = decode[api.JobList](t, do(t, "GET", b.URL+"/jobs?state=buried&tube="+b.Tube+"&limit=2&after="+url.QueryEscape(page.Next), ""))
	require.Equal(t, []uint64{buried[0]}, listedIDs(page))

	held := decode[map[string]any](t, do(t, "GET", b.URL+"/"+strconv.FormatUint(buried[2], 10)+"/", ""))
	require.Equal(t, "disk on fire near rack 7", held["error"], "GET /N/ of a buried job: %v", held)
	require.Equal(t, `{"doomed":2}`, held["payload"])

	list = decode[api.JobList](t, do(t, "GET", b.URL+"/jobs?state=failed&tube="+b.Tube, ""))
	require.Equal(t, failed, listedIDs(list))
	require.Equal(t, "try again", list.Jobs[0].Error)

	t.Log("a delete removes the record, a kick marks it")
	require.Equal(t, http.StatusNoContent, do(t, "DELETE", b.URL+"/"+strconv.FormatUint(buried[0], 10)+"/", "").StatusCode)
	r := do(t, "PATCH", b.URL+"/"+strconv.FormatUint(buried[1], 10)+"/", `{"state":"ready"}`)
	require.Equal(t, http.StatusOK, r.StatusCode, "%s", r.Body)
	list = decode[api.JobList](t, do(t, "GET", b.URL+"/jobs?state=buried&tube="+b.Tube, ""))
	require.Equal(t, []uint64{buried[2]}, listedIDs(list))
	_, err := b.Results.Failures().Get(ctx(t), buried[0])
	require.Error(t, err, "the deleted job's record is gone")

	r = do(t, "PATCH", b.URL+"/tubes/"+b.Tube, `{"kick":100}`)
	require.JSONEq(t, `{"kicked":1}`, string(r.Body))
	list = decode[api.JobList](t, do(t, "GET", b.URL+"/jobs?state=buried&tube="+b.Tube, ""))
	require.Empty(t, list.Jobs, "kicked jobs leave the buried list")
	requireError(t, do(t, "GET", b.URL+"/jobs?state=buried&after=nonsense", ""), http.StatusBadRequest, "after:")
}

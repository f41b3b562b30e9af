package api_test

import (
	"cmp"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/queue"
	"github.com/jobsys/jobs/pkg/store"
	"github.com/jobsys/jobs/pkg/testenv"
	"github.com/jobsys/jobs/services/manager/internal/api"
	"github.com/jobsys/jobs/services/manager/internal/idem"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var (
	_ api.Queue    = (*queue.Pool)(nil)
	_ api.Enqueuer = (*queue.Pool)(nil)
	_ api.Results  = (*store.Results)(nil)
)

// bundle is one test's API over real servers.
type bundle struct {
	testenv.Bundle
	URL     string
	Pool    *queue.Pool
	Results *store.Results
	Keys    *idem.Keys
	Logs    *testenv.LogBuffer
}

type options struct {
	cfg api.Config
	// beanstalk and mongoURL replace the shared servers.
	beanstalk string
	mongoURL  string
	// window is the Idempotency-Key window (default a day); noKeys
	// leaves the API without a key record.
	window time.Duration
	noKeys bool
}

func setup(t *testing.T, o options) bundle {
	t.Helper()
	b := bundle{Bundle: testenv.Setup(t), Logs: &testenv.LogBuffer{}}
	addr, url := b.Beanstalk.Addr(), b.Mongo.URL
	if o.beanstalk != "" {
		addr = o.beanstalk
	}
	if o.mongoURL != "" {
		url = o.mongoURL
	}
	b.Pool = queue.NewPool(queue.PoolConfig{Addr: addr})
	t.Cleanup(func() { b.Pool.Close() })
	client, err := store.Connect(url, "manager-test", 2*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { _ = client.Disconnect(context.Background()) })
	b.Results = store.NewResults(client, b.DB, "completed")
	if o.cfg.MaxJobSize == 0 {
		o.cfg.MaxJobSize = 65535
	}
	b.Keys = idem.New(client, b.DB, idem.Options{Window: cmp.Or(o.window, 24*time.Hour)})
	var keys api.Keys = b.Keys
	if o.noKeys {
		keys = nil
	}
	h := api.New(api.Deps{
		Queue: b.Pool, Enqueuer: b.Pool, Results: b.Results, Keys: keys, Config: o.cfg,
		Admin: b.Pool, Lister: b.Results, Failures: b.Results.Failures(),
		Logger: slog.New(slog.NewTextHandler(b.Logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	b.URL = srv.URL
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("API log:\n%s", b.Logs.String())
		}
	})
	return b
}

// reply is an answer with its body read.
type reply struct {
	*http.Response
	Body []byte
}

// do sends a request; headers are name, value pairs.
func do(t *testing.T, method, url, body string, headers ...string) reply {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	require.NoError(t, err)
	if method == http.MethodPost || method == http.MethodPatch {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i] == "Transfer-Encoding" {
			req.ContentLength = -1 // unknown length: the client sends it chunked
			continue
		}
		if headers[i+1] == "" {
			req.Header.Del(headers[i])
		} else {
			req.Header.Set(headers[i], headers[i+1])
		}
	}
	client := http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, "no-store", resp.Header.Get("Cache-Control"), "%s %s", method, url)
	require.Equal(t, "nosniff", resp.Header.Get("X-Content-Type-Options"), "%s %s", method, url)
	return reply{resp, b}
}

// requireError checks an error answer: its status, a JSON body with an
// error message containing msg.
func requireError(t *testing.T, r reply, status int, msg string) {
	t.Helper()
	require.Equal(t, status, r.StatusCode, "%s", r.Body)
	require.Equal(t, "application/json", r.Header.Get("Content-Type"))
	var e struct {
		Error  string `json:"error"`
		Detail string `json:"detail"`
	}
	require.NoError(t, json.Unmarshal(r.Body, &e), "%s", r.Body)
	require.NotEmpty(t, e.Error)
	require.Contains(t, e.Error, msg)
}

func decode[T any](t *testing.T, r reply) T {
	t.Helper()
	var v T
	require.NoError(t, json.Unmarshal(r.Body, &v), "%s", r.Body)
	return v
}

func post(t *testing.T, b bundle, query, body string) api.Created {
	t.Helper()
	r := do(t, "POST", b.URL+"/?"+query, body)
	require.Equal(t, http.StatusCreated, r.StatusCode, "%s", r.Body)
	c := decode[api.Created](t, r)
	require.Equal(t, "/"+strconv.FormatUint(c.ID, 10)+"/", r.Header.Get("Location"))
	return c
}

func ctx(t *testing.T) context.Context { return testenv.Context(t, 20*time.Second) }

// TestSeedExamples walks through the original README: post a job, read
// its stats while it is queued, and its result once a worker is done.
func TestSeedExamples(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})

	r := do(t, "POST", b.URL, `{"example":"data"}`)
	require.Equal(t, http.StatusCreated, r.StatusCode, "%s", r.Body)
	c := decode[api.Created](t, r)
	require.NotZero(t, c.ID)
	require.JSONEq(t, `{"id":`+strconv.FormatUint(c.ID, 10)+`,"tube":"default","state":"ready"}`, string(r.Body))
	require.Equal(t, "/"+strconv.FormatUint(c.ID, 10)+"/", r.Header.Get("Location"))

	r = do(t, "GET", b.URL+r.Header.Get("Location"), "")
	require.Equal(t, http.StatusOK, r.StatusCode, "%s", r.Body)
	stats := decode[map[string]any](t, r)
	keys := []string{"id", "tube", "state", "pri", "age", "delay", "ttr", "timeLeft", "file", "reserves", "timeouts", "releases", "buries", "kicks"}
	require.Len(t, stats, len(keys))
	for _, k := range keys {
		require.Contains(t, stats, k)
	}
	require.Equal(t, "ready", stats["state"])
	require.Equal(t, "default", stats["tube"])
	require.EqualValues(t, c.ID, stats["id"])
	require.EqualValues(t, 60, stats["ttr"])
	require.Equal(t, r.Body, do(t, "GET", b.URL+"/"+strconv.FormatUint(c.ID, 10), "").Body, "with or without the slash")

	// A worker stores the result and deletes the job.
	payload := `{"example":"data"}`
	require.NoError(t, b.Results.Save(ctx(t), job.Result{ID: c.ID, Hash: job.Hash(payload), Payload: payload, CompletedAt: time.Now()}))
	require.NoError(t, b.Pool.Delete(ctx(t), c.ID))

	r = do(t, "GET", b.URL+"/"+strconv.FormatUint(c.ID, 10)+"/", "")
	require.Equal(t, http.StatusOK, r.StatusCode, "%s", r.Body)
	want := `{"_id":` + strconv.FormatUint(c.ID, 10) + `,"hash":"09ee943c4fa33cd5a355eb7a4e38f7ef","payload":"{\"example\":\"data\"}"`
	require.True(t, strings.HasPrefix(string(r.Body), want), "%s", r.Body)
	res := decode[job.Result](t, r)
	require.Equal(t, "09ee943c4fa33cd5a355eb7a4e38f7ef", res.Hash)

	requireError(t, do(t, "GET", b.URL+"/999999999/", ""), http.StatusNotFound, "job 999999999 not found")
}

func TestPostStoresCompactBody(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	c := post(t, b, "tube="+b.Tube, "\n {\n\t\"a\" : [ 1 ,\t2 ] ,\r\n \"s\": \"keep  these  spaces <&>\" }\n\n")

	cons := queue.NewConsumer(b.Beanstalk.Addr(), []string{b.Tube}, 0)
	defer cons.Close()
	got, err := cons.Reserve(ctx(t), 5*time.Second)
	require.NoError(t, err)
	require.Equal(t, c.ID, got.ID)
	require.Equal(t, `{"a":[1,2],"s":"keep  these  spaces <&>"}`, string(got.Body))
	require.NoError(t, cons.Delete(ctx(t), got.ID))
}

func TestPostOptions(t *testing.T) {
	t.Parallel()
	b := setup(t, options{cfg: api.Config{DefaultTTR: 90 * time.Second}})

	c := post(t, b, "tube="+b.Tube+"&priority=7&ttr=2m", `{}`)
	require.Equal(t, api.Created{ID: c.ID, Tube: b.Tube, State: job.StateReady}, c)
	s, err := b.Pool.StatsJob(ctx(t), c.ID)
	require.NoError(t, err)
	require.Equal(t, b.Tube, s.Tube)
	require.EqualValues(t, 7, s.Pri)
	require.EqualValues(t, 120, s.TTR)

	c = post(t, b, "tube="+b.Tube+"&delay=30", `{}`)
	require.Equal(t, job.StateDelayed, c.State)
	s, err = b.Pool.StatsJob(ctx(t), c.ID)
	require.NoError(t, err)
	require.Equal(t, job.StateDelayed, s.State)
	require.EqualValues(t, 30, s.Delay)
	require.EqualValues(t, 90, s.TTR, "DEFAULT_TTR")

	// The path is ignored, as in the original.
	r := do(t, "POST", b.URL+"/any/path/at/all?tube="+b.Tube, `[1]`, "Content-Type", "")
	require.Equal(t, http.StatusCreated, r.StatusCode, "no Content-Type is fine: %s", r.Body)
}

func TestBadRequests(t *testing.T) {
	t.Parallel()
	b := setup(t, options{cfg: api.Config{MaxJobSize: 5000}})
	deep := strings.Repeat(`[`, 1001) + strings.Repeat("]", 1001)
	cases := []struct {
		name    string
		method  string
		path    string
		body    string
		headers []string
		status  int
		msg     string
	}{
		{"broken JSON", "POST", "/", `{"example":}`, nil, 400, "syntax error at byte offset 12"},
		{"truncated JSON", "POST", "/", `{"example":"da`, nil, 400, "syntax error at byte offset 14"},
		{"empty body", "POST", "/", ``, nil, 400, "request body is empty"},
		{"huge body", "POST", "/", `"` + strings.Repeat("x", 1<<20) + `"`, nil, 413, "the limit is MAX_JOB_SIZE=5000"},
		{"huge chunked body", "POST", "/", `"` + strings.Repeat("x", 1<<20) + `"`, []string{"Transfer-Encoding", "chunked"}, 413, "MAX_JOB_SIZE=5000"},
		{"over the limit once normalised", "POST", "/", `"` + strings.Repeat("x", 5000) + `"`, nil, 413, "job body is 5002 bytes; the limit is MAX_JOB_SIZE=5000"},
		{"pretty body over the limit once normalised", "POST", "/", "[" + strings.Repeat(" ", 4000) + `"` + strings.Repeat("x", 5000) + `"]`, nil, 413, "job body is over 5000 bytes once normalised"},
		{"form body", "POST", "/", `a=b`, []string{"Content-Type", "application/x-www-form-urlencoded"}, 400, "invalid JSON: syntax error at byte offset 1"},
		{"deep nesting", "POST", "/", deep, nil, 400, "nests deeper than 1000 levels"},
		{"invalid UTF-8", "POST", "/", "{\"a\":\"\xc3\x28\"}", nil, 400, "not valid UTF-8"},
		{"bad tube", "POST", "/?tube=no%20spaces", `{}`, nil, 400, "is not a valid tube name"},
		{"priority -1", "POST", "/?priority=-1", `{}`, nil, 400, `priority "-1" is not a whole number from 0 to 4294967295`},
		{"priority 2^32", "POST", "/?priority=4294967296", `{}`, nil, 400, "from 0 to 4294967295"},
		{"priority x", "POST", "/?priority=x", `{}`, nil, 400, `priority "x"`},
		{"delay -1", "POST", "/?delay=-1", `{}`, nil, 400, `delay "-1" is not a duration`},
		{"delay abc", "POST", "/?delay=abc", `{}`, nil, 400, `delay "abc" is not a duration`},
		{"ttr 0", "POST", "/?ttr=0", `{}`, nil, 400, `ttr "0" is not a duration of at least 1s`},
		{"ttr -1", "POST", "/?ttr=-1", `{}`, nil, 400, `ttr "-1"`},
		{"ttr abc", "POST", "/?ttr=abc", `{}`, nil, 400, `ttr "abc"`},
		{"broken query", "POST", "/?tube=%zz", `{}`, nil, 400, "query string does not parse"},
		{"id 0", "GET", "/0/", ``, nil, 400, "job id must be a positive integer"},
		{"id -1", "GET", "/-1/", ``, nil, 400, "job id must be a positive integer"},
		{"id abc", "GET", "/abc", ``, nil, 400, "job id must be a positive integer"},
		{"id 1.5", "GET", "/1.5/", ``, nil, 400, "job id must be a positive integer"},
		{"id too big", "GET", "/99999999999999999999/", ``, nil, 400, "job id must be a positive integer"},
		{"unknown path", "GET", "/jobs/1/", ``, nil, 404, "no such resource"},
		{"root", "GET", "/", ``, nil, 404, "no such resource"},
		{"patch bad id", "PATCH", "/x/", `{"state":"ready"}`, nil, 400, "job id must be a positive integer"},
		{"patch wrong state", "PATCH", "/1/", `{"state":"buried"}`, nil, 400, `the body must be {"state":"ready"}`},
		{"patch extra field", "PATCH", "/1/", `{"state":"ready","pri":1}`, nil, 400, `{"state":"ready"}`},
		{"patch empty", "PATCH", "/1/", ``, nil, 400, `{"state":"ready"}`},
		{"patch upper-case member", "PATCH", "/987654321/", `{"STATE":"ready"}`, nil, 400, `the body must be {"state":"ready"}`},
		{"patch title-case member", "PATCH", "/987654321/", `{"State":"ready"}`, nil, 400, `the body must be {"state":"ready"}`},
		{"patch upper-case value", "PATCH", "/987654321/", `{"state":"READY"}`, nil, 400, `the body must be {"state":"ready"}`},
		{"patch duplicate member", "PATCH", "/987654321/", `{"state":"buried","state":"ready"}`, nil, 400, `the body must be {"state":"ready"}`},
		{"patch two documents", "PATCH", "/987654321/", `{"state":"ready"} {}`, nil, 400, `the body must be {"state":"ready"}`},
		{"patch body too big", "PATCH", "/1/", `{"state":"ready"}` + strings.Repeat(" ", 5000), nil, 413, "request body is 5017 bytes; a PATCH body is at most 4096 bytes"},
		{"patch chunked body too big", "PATCH", "/1/", `{"state":"ready"}` + strings.Repeat(" ", 5000), []string{"Transfer-Encoding", "chunked"}, 413, "request body is over 4096 bytes; a PATCH body is at most 4096 bytes"},
		{"delete bad id", "DELETE", "/0", ``, nil, 400, "job id must be a positive integer"},
		{"unknown job", "GET", "/987654321/", ``, nil, 404, "job 987654321 not found"},
		{"patch unknown job", "PATCH", "/987654321/", `{"state":"ready"}`, nil, 404, "job 987654321 not found"},
		{"patch unknown job, spaced body", "PATCH", "/987654321/", ` { "state" : "ready" } `, nil, 404, "job 987654321 not found"},
		{"delete unknown job", "DELETE", "/987654321/", ``, nil, 404, "job 987654321 not found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := do(t, tc.method, b.URL+tc.path, tc.body, tc.headers...)
			requireError(t, r, tc.status, tc.msg)
		})
	}
}

func TestMethodNotAllowed(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	for path, allow := range map[string]string{
		"/5/":      "DELETE, GET, HEAD, OPTIONS, PATCH, POST",
		"/5":       "DELETE, GET, HEAD, OPTIONS, PATCH, POST",
		"/healthz": "GET, HEAD, OPTIONS, POST",
		"/a/b":     "GET, HEAD, OPTIONS, POST",
	} {
		for _, method := range []string{"PUT", "TRACE", "PROPFIND"} {
			r := do(t, method, b.URL+path, "")
			requireError(t, r, http.StatusMethodNotAllowed, "method "+method+" is not allowed")
			require.Equal(t, allow, r.Header.Get("Allow"), "%s %s", method, path)
		}
	}
	r := do(t, "OPTIONS", b.URL+"/5/", "")
	require.Equal(t, http.StatusNoContent, r.StatusCode)
	require.Equal(t, "DELETE, GET, HEAD, OPTIONS, PATCH, POST", r.Header.Get("Allow"))
}

func TestPatchAndDeleteByState(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	path := func(id uint64) string { return b.URL + "/" + strconv.FormatUint(id, 10) + "/" }
	stats := func(r reply) job.Stats { return decode[job.Stats](t, r) }
	ready := `{"state":"ready"}`

	// Ready: nothing to kick; deleting works once.
	c := post(t, b, "tube="+b.Tube, `{"n":1}`)
	requireError(t, do(t, "PATCH", path(c.ID), ready), http.StatusConflict, "is ready; only a buried or delayed job")
	r := do(t, "DELETE", path(c.ID), "")
	require.Equal(t, http.StatusNoContent, r.StatusCode, "%s", r.Body)
	require.Empty(t, r.Body)
	requireError(t, do(t, "GET", path(c.ID), ""), http.StatusNotFound, "not found")
	requireError(t, do(t, "DELETE", path(c.ID), ""), http.StatusNotFound, "not found")

	// Delayed: kicked to ready.
	c = post(t, b, "tube="+b.Tube+"&delay=600", `{"n":2}`)
	r = do(t, "PATCH", path(c.ID), ready)
	require.Equal(t, http.StatusOK, r.StatusCode, "%s", r.Body)
	require.Equal(t, job.StateReady, stats(r).State)
	require.EqualValues(t, 1, stats(r).Kicks)

	// Reserved by a worker: neither kicked nor deleted; buried: kicked.
	cons := queue.NewConsumer(b.Beanstalk.Addr(), []string{b.Tube}, 0)
	defer cons.Close()
	got, err := cons.Reserve(ctx(t), 5*time.Second)
	require.NoError(t, err)
	require.Equal(t, c.ID, got.ID)
	requireError(t, do(t, "DELETE", path(c.ID), ""), http.StatusConflict, "job "+strconv.FormatUint(c.ID, 10)+" is reserved by a worker")
	requireError(t, do(t, "PATCH", path(c.ID), ready), http.StatusConflict, "is reserved")
	require.NoError(t, cons.Bury(ctx(t), c.ID, 0))
	require.Equal(t, job.StateBuried, stats(do(t, "GET", path(c.ID), "")).State)
	r = do(t, "PATCH", path(c.ID), ready)
	require.Equal(t, http.StatusOK, r.StatusCode, "%s", r.Body)
	require.Equal(t, job.StateReady, stats(r).State)

	// Buried again, then deleted.
	got, err = cons.Reserve(ctx(t), 5*time.Second)
	require.NoError(t, err)
	require.NoError(t, cons.Bury(ctx(t), got.ID, 0))
	require.Equal(t, http.StatusNoContent, do(t, "DELETE", path(c.ID), "").StatusCode)

	// Completed: only in MongoDB; never deleted; made ready, it runs
	// again as a new job (TestOperationsAPI).
	done := uint64(4_000_000_000) + uint64(time.Now().UnixNano()%1_000_000)
	require.NoError(t, b.Results.Save(ctx(t), job.Result{ID: done, Hash: job.Hash("{}"), Payload: "{}"}))
	requireError(t, do(t, "DELETE", path(done), ""), http.StatusConflict, "is completed")
	require.Equal(t, http.StatusCreated, do(t, "PATCH", path(done), ready).StatusCode)
	res := decode[job.Result](t, do(t, "GET", path(done), ""))
	require.Equal(t, done, res.ID)
}

func TestAuth(t *testing.T) {
	t.Parallel()
	b := setup(t, options{cfg: api.Config{Token: "s3cret"}})
	bearer := func(tok string) []string { return []string{"Authorization", "Bearer " + tok} }

	for _, method := range []string{"POST", "PATCH", "DELETE"} {
		r := do(t, method, b.URL+"/1/", `{"state":"ready"}`)
		requireError(t, r, http.StatusUnauthorized, "authorization required")
		require.Equal(t, `Bearer realm="jobs"`, r.Header.Get("WWW-Authenticate"))
		requireError(t, do(t, method, b.URL+"/1/", `{}`, "Authorization", "Basic czNjcmV0"), http.StatusUnauthorized, "authorization required")
		requireError(t, do(t, method, b.URL+"/1/", `{}`, bearer("wrong")...), http.StatusForbidden, "not valid")
		requireError(t, do(t, method, b.URL+"/1/", `{}`, bearer("s3cret-and-more")...), http.StatusForbidden, "not valid")
	}
	r := do(t, "POST", b.URL+"/?tube="+b.Tube, `{}`, bearer("s3cret")...)
	require.Equal(t, http.StatusCreated, r.StatusCode, "%s", r.Body)
	id := decode[api.Created](t, r).ID
	r = do(t, "DELETE", b.URL+"/"+strconv.FormatUint(id, 10)+"/", "", "Authorization", "bearer s3cret")
	require.Equal(t, http.StatusNoContent, r.StatusCode, "the scheme is case-insensitive: %s", r.Body)

	// Reads are open unless protected; probes always are.
	requireError(t, do(t, "GET", b.URL+"/987654321/", ""), http.StatusNotFound, "not found")
	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		require.Equal(t, http.StatusOK, do(t, "GET", b.URL+p, "").StatusCode, p)
	}

	p := setup(t, options{cfg: api.Config{Token: "s3cret", ProtectReads: true}})
	requireError(t, do(t, "GET", p.URL+"/1/", ""), http.StatusUnauthorized, "authorization required")
	requireError(t, do(t, "GET", p.URL+"/1/", "", bearer("nope")...), http.StatusForbidden, "not valid")
	requireError(t, do(t, "GET", p.URL+"/987654321/", "", bearer("s3cret")...), http.StatusNotFound, "not found")
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		require.Equal(t, http.StatusOK, do(t, "GET", p.URL+path, "").StatusCode, path)
	}
}

func TestRateLimit(t *testing.T) {
	t.Parallel()
	b := setup(t, options{cfg: api.Config{RateLimit: 1}})
	q := "/?tube=" + b.Tube
	// Burst is twice the rate: two pass, the third waits.
	require.Equal(t, http.StatusCreated, do(t, "POST", b.URL+q, `{}`).StatusCode)
	require.Equal(t, http.StatusCreated, do(t, "POST", b.URL+q, `{}`).StatusCode)
	r := do(t, "POST", b.URL+q, `{}`)
	requireError(t, r, http.StatusTooManyRequests, "too many requests")
	require.Equal(t, "1", r.Header.Get("Retry-After"))
	// Not believed: the socket is not a trusted proxy.
	requireError(t, do(t, "POST", b.URL+q, `{}`, "X-Forwarded-For", "203.0.113.9"), http.StatusTooManyRequests, "too many")
	// Reads are not limited.
	require.Equal(t, http.StatusOK, do(t, "GET", b.URL+"/healthz", "").StatusCode)

	require.Eventually(t, func() bool {
		return do(t, "POST", b.URL+q, `{}`).StatusCode == http.StatusCreated
	}, 5*time.Second, 100*time.Millisecond, "a token comes back after a second")
}

func TestRateLimitBehindTrustedProxy(t *testing.T) {
	t.Parallel()
	_, loopback, err := net.ParseCIDR("127.0.0.1/32")
	require.NoError(t, err)
	b := setup(t, options{cfg: api.Config{RateLimit: 0.5, TrustedProxies: []*net.IPNet{loopback}}})
	q := "/?tube=" + b.Tube
	for _, client := range []string{"203.0.113.1", "203.0.113.2"} {
		require.Equal(t, http.StatusCreated, do(t, "POST", b.URL+q, `{}`, "X-Forwarded-For", client).StatusCode)
	}
	r := do(t, "POST", b.URL+q, `{}`, "X-Forwarded-For", "203.0.113.1")
	requireError(t, r, http.StatusTooManyRequests, "too many requests")
	require.Equal(t, "2", r.Header.Get("Retry-After"), "half a job a second: a token every two seconds")
	require.Equal(t, http.StatusCreated, do(t, "POST", b.URL+q, `{}`, "X-Real-IP", "203.0.113.3").StatusCode)
	requireError(t, do(t, "POST", b.URL+q, `{}`, "X-Real-IP", "203.0.113.3"), http.StatusTooManyRequests, "too many")
}

func TestReadyzHealthzMetrics(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	r := do(t, "GET", b.URL+"/healthz", "")
	require.Equal(t, http.StatusOK, r.StatusCode)
	require.JSONEq(t, `{"status":"ok"}`, string(r.Body))

	r = do(t, "GET", b.URL+"/readyz", "")
	require.Equal(t, http.StatusOK, r.StatusCode, "%s", r.Body)
	require.JSONEq(t, `{"status":"ready","checks":{"beanstalkd":"ok","mongodb":"ok"}}`, string(r.Body))

	post(t, b, "tube="+b.Tube, `{}`)
	do(t, "GET", b.URL+"/abc", "")
	r = do(t, "GET", b.URL+"/metrics", "")
	require.Equal(t, http.StatusOK, r.StatusCode)
	require.Contains(t, r.Header.Get("Content-Type"), "text/plain")
	text := string(r.Body)
	for _, want := range []string{
		`manager_http_requests_total{code="201",method="POST",route="/*"} 1`,
		`manager_http_requests_total{code="400",method="GET",route="/:id"} 1`,
		`manager_http_request_duration_seconds_bucket{route="/*",le=`,
		`manager_jobs_enqueued_total{tube="` + b.Tube + `"} 1`,
		"go_goroutines",
	} {
		require.Contains(t, text, want)
	}
}

func TestReadyzNamesWhatFailed(t *testing.T) {
	t.Parallel()
	bs := testenv.StartBeanstalkd(t, testenv.BeanstalkdOptions{})
	b := setup(t, options{beanstalk: bs.Addr()})
	require.Equal(t, http.StatusOK, do(t, "GET", b.URL+"/readyz", "").StatusCode)
	bs.Stop()
	start := time.Now()
	r := do(t, "GET", b.URL+"/readyz", "")
	require.Less(t, time.Since(start), 2500*time.Millisecond)
	requireError(t, r, http.StatusServiceUnavailable, "beanstalkd")
	require.Equal(t, "1", r.Header.Get("Retry-After"))
	require.JSONEq(t, `{"beanstalkd":"unreachable","mongodb":"ok"}`, mustJSON(t, decode[api.Readiness](t, r).Checks))
	require.NotContains(t, decode[api.Readiness](t, r).Error, "mongodb")
}

func mustJSON(t *testing.T, v any) string {
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}

func TestCORS(t *testing.T) {
	t.Parallel()
	b := setup(t, options{cfg: api.Config{CORSOrigins: []string{"https://board.example"}, Token: "tok"}})
	preflight := func(origin string) reply {
		return do(t, "OPTIONS", b.URL+"/", "", "Origin", origin,
			"Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "authorization,content-type,idempotency-key")
	}
	r := preflight("https://board.example")
	require.Equal(t, http.StatusNoContent, r.StatusCode)
	require.Equal(t, "https://board.example", r.Header.Get("Access-Control-Allow-Origin"))
	require.Contains(t, r.Header.Get("Access-Control-Allow-Methods"), "POST")
	require.Contains(t, strings.ToLower(r.Header.Get("Access-Control-Allow-Headers")), "authorization")
	require.Contains(t, strings.ToLower(r.Header.Get("Access-Control-Allow-Headers")), "idempotency-key")

	r = preflight("https://evil.example")
	require.Empty(t, r.Header.Get("Access-Control-Allow-Origin"))

	// Simple requests get the header too, errors included.
	r = do(t, "POST", b.URL+"/", `{}`, "Origin", "https://board.example")
	requireError(t, r, http.StatusUnauthorized, "authorization required")
	require.Equal(t, "https://board.example", r.Header.Get("Access-Control-Allow-Origin"))
	r = do(t, "GET", b.URL+"/healthz", "", "Origin", "https://evil.example")
	require.Empty(t, r.Header.Get("Access-Control-Allow-Origin"))

	// Without origins configured there are no CORS headers at all.
	n := setup(t, options{})
	r = do(t, "GET", n.URL+"/healthz", "", "Origin", "https://board.example")
	require.Empty(t, r.Header.Get("Access-Control-Allow-Origin"))
}

// TestQueueDown checks that an unreachable beanstalkd gives a quick 503,
// and that the API recovers by itself when it returns.
func TestQueueDown(t *testing.T) {
	t.Parallel()
	bs := testenv.StartBeanstalkd(t, testenv.BeanstalkdOptions{})
	b := setup(t, options{beanstalk: bs.Addr()})
	c := post(t, b, "", `{}`)
	bs.Stop()

	for _, req := range []struct{ method, path, body string }{
		{"POST", "/", `{}`},
		{"GET", "/" + strconv.FormatUint(c.ID, 10) + "/", ""},
		{"PATCH", "/1/", `{"state":"ready"}`},
		{"DELETE", "/1/", ""},
	} {
		start := time.Now()
		r := do(t, req.method, b.URL+req.path, req.body)
		require.Less(t, time.Since(start), 2*time.Second, req.method)
		requireError(t, r, http.StatusServiceUnavailable, "the job queue is unavailable")
		require.Equal(t, "1", r.Header.Get("Retry-After"))
	}
	require.NotContains(t, b.Logs.String(), "level=ERROR")

	require.NoError(t, bs.Restart())
	require.Eventually(t, func() bool {
		return do(t, "POST", b.URL+"/", `{}`).StatusCode == http.StatusCreated
	}, 10*time.Second, 50*time.Millisecond)
}

// TestQueueDownStoredResultStillAnswers: results are final, so a stored
// one is answered while beanstalkd is away.
func TestQueueDownStoredResultStillAnswers(t *testing.T) {
	t.Parallel()
	bs := testenv.StartBeanstalkd(t, testenv.BeanstalkdOptions{})
	bs.Stop()
	b := setup(t, options{beanstalk: bs.Addr()})
	require.NoError(t, b.Results.Save(ctx(t), job.Result{ID: 77, Hash: job.Hash("[]"), Payload: "[]"}))
	r := do(t, "GET", b.URL+"/77/", "")
	require.Equal(t, http.StatusOK, r.StatusCode, "%s", r.Body)
	require.EqualValues(t, 77, decode[job.Result](t, r).ID)
}

func TestMongoDown(t *testing.T) {
	t.Parallel()
	mg := testenv.StartMongo(t)
	b := setup(t, options{mongoURL: mg.URL})
	requireError(t, do(t, "GET", b.URL+"/987654321/", ""), http.StatusNotFound, "not found")
	mg.Stop()

	start := time.Now()
	r := do(t, "GET", b.URL+"/987654321/", "")
	require.Less(t, time.Since(start), 2500*time.Millisecond)
	requireError(t, r, http.StatusServiceUnavailable, "the results database is unavailable")
	require.Equal(t, "1", r.Header.Get("Retry-After"))

	// An Idempotency-Key cannot be kept: no job is put, and the 503 says so.
	r = do(t, "POST", b.URL+"/?tube="+b.Tube, `{}`, "Idempotency-Key", "k1")
	requireError(t, r, http.StatusServiceUnavailable, "the results database is unavailable")
	require.Contains(t, string(r.Body), `"job_may_exist":false`)

	// Jobs still queued answer from beanstalkd, and posting goes on.
	c := post(t, b, "tube="+b.Tube, `{}`)
	require.Equal(t, http.StatusOK, do(t, "GET", b.URL+"/"+strconv.FormatUint(c.ID, 10)+"/", "").StatusCode)

	r = do(t, "GET", b.URL+"/readyz", "")
	requireError(t, r, http.StatusServiceUnavailable, "mongodb")

	require.NoError(t, mg.Restart())
	require.Eventually(t, func() bool {
		return do(t, "GET", b.URL+"/987654321/", "").StatusCode == http.StatusNotFound
	}, 20*time.Second, 100*time.Millisecond, "the driver reconnects by itself")
}

// TestJobTooBigFromBeanstalkd: a beanstalkd with a smaller max-job-size
// than MAX_JOB_SIZE answers JOB_TOO_BIG, which is a 413 too.
func TestJobTooBigFromBeanstalkd(t *testing.T) {
	t.Parallel()
	bs := testenv.StartBeanstalkd(t, testenv.BeanstalkdOptions{MaxJobSize: 100})
	b := setup(t, options{beanstalk: bs.Addr(), cfg: api.Config{MaxJobSize: 1000}})
	r := do(t, "POST", b.URL+"/", `"`+strings.Repeat("x", 200)+`"`)
	requireError(t, r, http.StatusRequestEntityTooLarge, "job body is 202 bytes; the limit is MAX_JOB_SIZE=1000")
	require.Contains(t, string(r.Body), "JOB_TOO_BIG")
}

// A beanstalkd whose binlog cannot grow (disk full; here its directory
// is gone) refuses puts with OUT_OF_MEMORY: POST answers 503 saying so,
// not a bare 500, and /readyz reports it though beanstalkd still answers.
func TestQueueOutOfMemoryIs503AndNotReady(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bs := testenv.StartBeanstalkd(t, testenv.BeanstalkdOptions{BinlogDir: dir, FsyncMS: -1, BinlogSize: 2000})
	b := setup(t, options{beanstalk: bs.Addr()})
	require.Equal(t, http.StatusOK, do(t, "GET", b.URL+"/readyz", "").StatusCode)
	require.NoError(t, os.RemoveAll(dir))
	var r reply
	for range 100 {
		if r = do(t, "POST", b.URL+"/", `{"pad":"`+strings.Repeat("x", 200)+`"}`); r.StatusCode != http.StatusCreated {
			break
		}
	}
	requireError(t, r, http.StatusServiceUnavailable, "beanstalkd is out of memory or its binlog disk is full")
	require.NotEmpty(t, r.Header.Get("Retry-After"))
	r = do(t, "GET", b.URL+"/readyz", "")
	require.Equal(t, http.StatusServiceUnavailable, r.StatusCode)
	require.Contains(t, string(r.Body), `"beanstalkd":"refusing jobs: out of memory or binlog disk full"`)
}

package api_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/queue"
	"github.com/jobsys/jobs/pkg/testenv"
	"github.com/jobsys/jobs/services/manager/internal/api"
	"github.com/jobsys/jobs/services/manager/internal/idem"
)

// jobsIn counts the jobs in tube.
func jobsIn(t *testing.T, p *queue.Pool, tube string) uint64 {
	t.Helper()
	st, err := p.TubeStats(ctx(t), []string{tube})
	require.NoError(t, err)
	s := st[tube]
	return s.Ready + s.Reserved + s.Delayed + s.Buried
}

type answer struct {
	Status     int
	ID         uint64
	Err        string
	MayBe      *bool
	Replay     string
	RetryAfter string
	RawBody    string
}

func postKey(t *testing.T, url, body, key string) answer {
	t.Helper()
	r := do(t, "POST", url, body, "Idempotency-Key", key)
	var v struct {
		ID          uint64 `json:"id"`
		Error       string `json:"error"`
		JobMayExist *bool  `json:"job_may_exist"`
	}
	require.NoError(t, json.Unmarshal(r.Body, &v), "%s", r.Body)
	return answer{r.StatusCode, v.ID, v.Error, v.JobMayExist, r.Header.Get("Idempotent-Replayed"), r.Header.Get("Retry-After"), string(r.Body)}
}

// TestIdempotencyKey: the same key within the window answers the same
// job with 200, never a second job; a key used for another request is a
// 422; bad keys are 400s.
func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	url := b.URL + "/?tube=" + b.Tube
	first := postKey(t, url, `{"n":1}`, "order-42")
	require.Equal(t, http.StatusCreated, first.Status, first.RawBody)
	again := postKey(t, url, ` { "n" : 1 } `, `"order-42"`) // same JSON, quoted key
	require.Equal(t, http.StatusOK, again.Status, again.RawBody)
	require.Equal(t, first.ID, again.ID)
	require.Equal(t, "true", again.Replay)
	require.JSONEq(t, `{"id":`+strconv.FormatUint(first.ID, 10)+`,"tube":"`+b.Tube+`","state":"ready"}`, again.RawBody)
	require.EqualValues(t, 1, jobsIn(t, b.Pool, b.Tube))

	other := postKey(t, url, `{"n":2}`, "order-42")
	require.Equal(t, http.StatusUnprocessableEntity, other.Status, other.RawBody)
	require.Contains(t, other.Err, "was used for a different request")
	other = postKey(t, url+"&priority=5", `{"n":1}`, "order-42")
	require.Equal(t, http.StatusUnprocessableEntity, other.Status, other.RawBody)
	require.Equal(t, http.StatusCreated, postKey(t, url, `{"n":1}`, "order-43").Status, "another key is another job")
	require.EqualValues(t, 2, jobsIn(t, b.Pool, b.Tube))

	for name, key := range map[string]string{
		"empty": `""`, "too long": strings.Repeat("k", idem.MaxKeyLen+1), "space inside": "a b", "not ASCII": "clé",
	} {
		r := postKey(t, url, `{}`, key)
		require.Equal(t, http.StatusBadRequest, r.Status, "%s: %s", name, r.RawBody)
		require.Contains(t, r.Err, "is not a valid key", name)
	}
	require.Equal(t, http.StatusCreated, postKey(t, url, `{}`, strings.Repeat("k", idem.MaxKeyLen)).Status, "255 bytes is the limit")
	r := do(t, "POST", url, `{}`, "Idempotency-Key", "a")
	require.Equal(t, http.StatusCreated, r.StatusCode)
	req, err := http.NewRequest("POST", url, strings.NewReader(`{}`))
	require.NoError(t, err)
	req.Header.Add("Idempotency-Key", "x1")
	req.Header.Add("Idempotency-Key", "x2")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)

	// Without a key record, a key is refused rather than ignored.
	n := setup(t, options{noKeys: true})
	require.Equal(t, http.StatusNotImplemented, postKey(t, n.URL+"/?tube="+n.Tube, `{}`, "k").Status)
}

// TestIdempotencyKeyConcurrentManagers: many requests with one key at
// once, spread over two managers sharing beanstalkd and MongoDB, make one
// job, and every request that got an id got that one.
func TestIdempotencyKeyConcurrentManagers(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	second := httptest.NewServer(api.New(api.Deps{Queue: b.Pool, Enqueuer: b.Pool, Results: b.Results,
		Keys:   idem.New(b.Mongo.Client(), b.DB, idem.Options{Window: time.Hour}),
		Config: api.Config{MaxJobSize: 65535}, Logger: slog.New(slog.DiscardHandler)}))
	t.Cleanup(second.Close)

	for round := range 3 {
		key := "race-" + strconv.Itoa(round)
		answers := make([]answer, 16)
		var wg sync.WaitGroup
		for i := range answers {
			wg.Go(func() {
				base := b.URL
				if i%2 == 1 {
					base = second.URL
				}
				answers[i] = postKey(t, base+"/?tube="+b.Tube, `{"race":true}`, key)
			})
		}
		wg.Wait()
		created, ids := 0, map[uint64]bool{}
		for _, a := range answers {
			switch a.Status {
			case http.StatusCreated:
				created++
				ids[a.ID] = true
			case http.StatusOK:
				ids[a.ID] = true
			default:
				require.Equal(t, http.StatusConflict, a.Status, a.RawBody)
				require.Contains(t, a.Err, "still being served")
				require.Equal(t, "1", a.RetryAfter)
			}
		}
		require.Equal(t, 1, created, "round %d: %+v", round, answers)
		require.Len(t, ids, 1)
		require.EqualValues(t, round+1, jobsIn(t, b.Pool, b.Tube))
	}
}

// TestIdempotencyKeyWhileQueueHangs: with beanstalkd frozen a POST is a
// 503 that says the job may exist; a retry with the same key makes no
// second job (409), and once beanstalkd goes on there is exactly one.
// A beanstalkd that refuses connections gives a 503 that says the job
// was not made, and the key is free again for the retry.
func TestIdempotencyKeyWhileQueueHangs(t *testing.T) {
	t.Parallel()
	bs := testenv.StartBeanstalkd(t, testenv.BeanstalkdOptions{})
	b := setup(t, options{beanstalk: bs.Addr()})
	url := b.URL + "/?tube=" + b.Tube
	require.Equal(t, http.StatusCreated, postKey(t, url, `{"warm":1}`, "warm").Status)
	thaw := bs.Freeze(t)

	start := time.Now()
	first := make(chan answer, 1)
	go func() { first <- postKey(t, url, `{"pay":1}`, "pay-1") }()
	time.Sleep(200 * time.Millisecond)
	// Meanwhile the same key waits a second for it, then says so.
	a := postKey(t, url, `{"pay":1}`, "pay-1")
	require.Equal(t, http.StatusConflict, a.Status, a.RawBody)
	require.Contains(t, a.Err, "still being served")
	require.Equal(t, "1", a.RetryAfter)
	a = <-first
	require.Less(t, time.Since(start), 2500*time.Millisecond)
	require.Equal(t, http.StatusServiceUnavailable, a.Status, a.RawBody)
	require.NotNil(t, a.MayBe, a.RawBody)
	require.True(t, *a.MayBe, a.RawBody)
	require.Contains(t, a.RawBody, "same Idempotency-Key")

	a = postKey(t, url, `{"pay":1}`, "pay-1")
	require.Equal(t, http.StatusConflict, a.Status, a.RawBody)
	require.Contains(t, a.Err, "its id is unknown")

	thaw()
	require.Eventually(t, func() bool { return jobsIn(t, b.Pool, b.Tube) == 2 }, 10*time.Second, 50*time.Millisecond)
	a = postKey(t, url, `{"pay":1}`, "pay-1")
	require.Equal(t, http.StatusConflict, a.Status, "still no second job: %s", a.RawBody)
	require.EqualValues(t, 2, jobsIn(t, b.Pool, b.Tube), "the warm-up job and one payment")

	bs.Stop()
	// The pool's idle connections fail first (beanstalkd may have read
	// what was written on them: "may exist"), and are dropped.
	requireError(t, do(t, "POST", url, `{}`), http.StatusServiceUnavailable, "unavailable")
	a = postKey(t, url, `{"pay":2}`, "pay-2")
	require.Equal(t, http.StatusServiceUnavailable, a.Status, a.RawBody)
	require.NotNil(t, a.MayBe, a.RawBody)
	require.False(t, *a.MayBe, "a refused connection made no job: %s", a.RawBody)
	require.NoError(t, bs.Restart())
	require.Eventually(t, func() bool {
		return postKey(t, url, `{"pay":2}`, "pay-2").Status == http.StatusCreated
	}, 10*time.Second, 50*time.Millisecond, "the key was given back")
}

// TestIdempotencyKeyWindow: past the window a key is new again, whether
// its record was removed yet or not, and Sweep removes such records (the
// TTL monitor's work on FerretDB).
func TestIdempotencyKeyWindow(t *testing.T) {
	t.Parallel()
	b := setup(t, options{window: 300 * time.Millisecond})
	url := b.URL + "/?tube=" + b.Tube
	first := postKey(t, url, `{}`, "w")
	require.Equal(t, http.StatusCreated, first.Status)
	require.Equal(t, first.ID, postKey(t, url, `{}`, "w").ID)
	time.Sleep(400 * time.Millisecond)
	second := postKey(t, url, `{}`, "w")
	require.Equal(t, http.StatusCreated, second.Status, second.RawBody)
	require.NotEqual(t, first.ID, second.ID)

	require.Equal(t, http.StatusCreated, postKey(t, url, `{}`, "w2").Status)
	time.Sleep(400 * time.Millisecond)
	n, err := b.Keys.Sweep(context.Background())
	require.NoError(t, err)
	require.EqualValues(t, 2, n)
}

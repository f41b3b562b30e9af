package api_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/queue"
)

// GET /N/ for a job beanstalkd holds adds the payload, last error and
// attempts of its failure record to the stats; a job that never failed
// answers its stats alone, as before.
func TestGetHeldJobShowsItsLastFailure(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tube := "held-" + b.Tube
	body := `{"rack":7}`
	id, err := b.Pool.Put(ctx, []byte(body), queue.PutOptions{Tube: tube, TTR: time.Minute})
	require.NoError(t, err)
	path := fmt.Sprintf("%s/%d/", b.URL, id)

	r := do(t, "GET", path, "")
	require.Equal(t, http.StatusOK, r.StatusCode, "%s", r.Body)
	plain := decode[map[string]any](t, r)
	require.Equal(t, "ready", plain["state"])
	for _, k := range []string{"payload", "error", "attempts"} {
		require.NotContains(t, plain, k, "no failure, no %s", k)
	}

	c := queue.NewConsumer(b.Beanstalk.Addr(), []string{tube}, 2*time.Second)
	defer c.Close()
	res, err := c.Reserve(ctx, time.Second)
	require.NoError(t, err)
	require.NoError(t, c.Bury(ctx, res.ID, res.Priority))
	require.NoError(t, b.Results.Failures().Record(ctx, job.Failure{ID: id, Tube: tube, State: job.FailureBuried,
		Payload: body, Error: "exit status 3: disk on fire near rack 7", Attempts: 5, Worker: "w1", FailedAt: time.Now()}))

	r = do(t, "GET", path, "")
	require.Equal(t, http.StatusOK, r.StatusCode, "%s", r.Body)
	got := decode[map[string]any](t, r)
	require.Equal(t, "buried", got["state"])
	require.Equal(t, body, got["payload"])
	require.Equal(t, "exit status 3: disk on fire near rack 7", got["error"])
	require.EqualValues(t, 5, got["attempts"])
	require.EqualValues(t, 1, got["buries"], "the stats are all still there")
	require.EqualValues(t, id, got["id"])
}

// A completed job's answer carries what its handler returned as result,
// a JSON value, and no hash when the handler was not md5.
func TestGetCompletedJobShowsItsResult(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, b.Results.Save(ctx, job.Result{ID: 991, Payload: `{"text":"hello"}`, Tube: "shout",
		Result: job.Value(`{"upper":"HELLO","job_id":"991"}`), Attempts: 1}))
	r := do(t, "GET", b.URL+"/991/", "")
	require.Equal(t, http.StatusOK, r.StatusCode, "%s", r.Body)
	require.Contains(t, string(r.Body), `"result":{"upper":"HELLO","job_id":"991"}`)
	require.NotContains(t, string(r.Body), `"hash"`)
}

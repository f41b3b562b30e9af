package api_test

import (
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/testenv"
)

// TestGetWhileQueueHangs: with beanstalkd frozen (SIGSTOP: connections
// open, nothing answered), a stored result is still read at once, since
// MongoDB is asked beside beanstalkd and not after it, and a queued job
// gets its 503 within the documented two seconds, under a burst of
// concurrent reads too.
func TestGetWhileQueueHangs(t *testing.T) {
	t.Parallel()
	bs := testenv.StartBeanstalkd(t, testenv.BeanstalkdOptions{})
	b := setup(t, options{beanstalk: bs.Addr()})
	queued := post(t, b, "tube="+b.Tube, `{}`)
	require.NoError(t, b.Results.Save(ctx(t), job.Result{ID: 1 << 40, Hash: job.Hash("[]"), Payload: "[]"}))
	thaw := bs.Freeze(t)

	start := time.Now()
	r := do(t, "GET", b.URL+"/"+strconv.Itoa(1<<40)+"/", "")
	require.Equal(t, http.StatusOK, r.StatusCode, "%s", r.Body)
	require.EqualValues(t, 1<<40, decode[job.Result](t, r).ID)
	require.Less(t, time.Since(start), time.Second, "a stored result does not wait out beanstalkd's timeout")

	var wg sync.WaitGroup
	took := make([]time.Duration, 40)
	status := make([]int, len(took))
	for i := range took {
		wg.Go(func() {
			path := "/" + strconv.FormatUint(queued.ID, 10) + "/"
			if i%2 == 1 {
				path = "/" + strconv.Itoa(1<<40) + "/"
			}
			start := time.Now()
			r := do(t, "GET", b.URL+path, "")
			took[i], status[i] = time.Since(start), r.StatusCode
		})
	}
	wg.Wait()
	for i := range took {
		want := http.StatusServiceUnavailable
		if i%2 == 1 {
			want = http.StatusOK
		}
		require.Equal(t, want, status[i], "request %d", i)
		require.Less(t, took[i], 2500*time.Millisecond, "request %d", i)
	}

	thaw()
	require.Eventually(t, func() bool {
		return do(t, "GET", b.URL+"/"+strconv.FormatUint(queued.ID, 10)+"/", "").StatusCode == http.StatusOK
	}, 10*time.Second, 50*time.Millisecond, "the API recovers when beanstalkd goes on")
}

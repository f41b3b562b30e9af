package queue_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/queue"
	"github.com/jobsys/jobs/pkg/testenv"
)

// Many concurrent puts to several tubes, pipelined onto two connections:
// each gets its own id, and each job is in its tube with its body,
// priority, delay and TTR; a refused put in the middle of a pipeline is
// answered on its own and its neighbours go through.
func TestConcurrentPutsArePipelinedFaithfully(t *testing.T) {
	t.Parallel()
	bs := testenv.StartBeanstalkd(t, testenv.BeanstalkdOptions{MaxJobSize: 1000})
	p := queue.NewPool(queue.PoolConfig{Addr: bs.Addr()})
	defer p.Close()

	type put struct {
		body string
		o    queue.PutOptions
	}
	tubes := []string{"default", "a-" + testenv.RandomName(), "b-" + testenv.RandomName()}
	const n = 600
	puts := make([]put, n)
	for i := range puts {
		puts[i] = put{fmt.Sprintf(`{"i":%d}`, i), queue.PutOptions{Tube: tubes[i%3], Priority: uint32(i), Delay: time.Duration(i%2) * time.Hour, TTR: time.Duration(1+i%7) * time.Second}}
		if i%50 == 25 {
			puts[i].body = string(make([]byte, 1001)) // too big
		}
	}
	p0 := queue.NewPool(queue.PoolConfig{Addr: bs.Addr()})
	defer p0.Close()
	st0, err := p0.ServerStats(ctx(t))
	require.NoError(t, err)
	ids := make([]uint64, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range puts {
		wg.Go(func() {
			<-start
			ids[i], errs[i] = p.Put(ctx(t), []byte(puts[i].body), puts[i].o)
		})
	}
	close(start)
	wg.Wait()
	st, err := p.ServerStats(ctx(t))
	require.NoError(t, err)
	// Two senders, not a connection per concurrent put, and a pipeline
	// switches tubes once per tube, not once per put.
	require.LessOrEqual(t, atoi(t, st["total-connections"])-atoi(t, st0["total-connections"]), 2, "connections")
	require.Less(t, atoi(t, st["cmd-use"]), n/2, "use commands for %s puts", st["cmd-put"])

	seen := map[uint64]int{}
	for i, pt := range puts {
		if i%50 == 25 {
			require.ErrorIs(t, errs[i], queue.ErrJobTooBig, "put %d", i)
			continue
		}
		require.NoError(t, errs[i], "put %d", i)
		prev, dup := seen[ids[i]]
		require.False(t, dup, "puts %d and %d got id %d", prev, i, ids[i])
		seen[ids[i]] = i
		s, err := p.StatsJob(ctx(t), ids[i])
		require.NoError(t, err)
		state := job.StateReady
		if pt.o.Delay > 0 {
			state = job.StateDelayed
		}
		require.Equal(t, pt.o.Tube, s.Tube, "put %d", i)
		require.Equal(t, state, s.State, "put %d", i)
		require.Equal(t, pt.o.Priority, s.Pri, "put %d", i)
		require.EqualValues(t, pt.o.TTR/time.Second, s.TTR, "put %d", i)
	}
	require.Len(t, seen, n-n/50)

	// The bodies: every ready job of the first tube, reserved.
	c := queue.NewConsumer(bs.Addr(), []string{tubes[0]}, 0)
	defer c.Close()
	for {
		r, err := c.Reserve(ctx(t), 0)
		if err != nil {
			require.ErrorIs(t, err, queue.ErrNoJob)
			break
		}
		i, ok := seen[r.ID]
		require.True(t, ok, "job %d", r.ID)
		require.Equal(t, puts[i].body, string(r.Body), "put %d", i)
		require.NoError(t, c.Delete(ctx(t), r.ID))
	}
}

// Concurrent stats-jobs share the pipeline with puts: each answer is its
// own job's (tube, priority, state), an unknown id is ErrNotFound without
// disturbing its neighbours, and the puts in between still land in their
// tubes.
func TestConcurrentStatsJobsArePipelinedWithPuts(t *testing.T) {
	t.Parallel()
	bs := testenv.StartBeanstalkd(t, testenv.BeanstalkdOptions{})
	p0 := queue.NewPool(queue.PoolConfig{Addr: bs.Addr()})
	defer p0.Close()
	long := strings.Repeat("t", 200) // the longest tube name beanstalkd takes
	tubes := []string{"s-" + testenv.RandomName(), long}
	const n = 300
	known := make([]uint64, n)
	for i := range known {
		var err error
		known[i], err = p0.Put(ctx(t), []byte("x"), queue.PutOptions{Tube: tubes[i%2], Priority: uint32(i), Delay: time.Duration(i%3) * time.Hour, TTR: time.Minute})
		require.NoError(t, err)
	}
	st0, err := p0.ServerStats(ctx(t))
	require.NoError(t, err)

	p := queue.NewPool(queue.PoolConfig{Addr: bs.Addr()})
	defer p.Close()
	putTube := "p-" + testenv.RandomName()
	stats := make([]job.Stats, n)
	errs := make([]error, n)
	unknownErrs := make([]error, 100)
	putIDs := make([]uint64, 100)
	putErrs := make([]error, 100)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range known {
		wg.Go(func() { <-start; stats[i], errs[i] = p.StatsJob(ctx(t), known[i]) })
	}
	for i := range unknownErrs {
		wg.Go(func() { <-start; _, unknownErrs[i] = p.StatsJob(ctx(t), 1_000_000+uint64(i)) })
		wg.Go(func() {
			<-start
			putIDs[i], putErrs[i] = p.Put(ctx(t), []byte("y"), queue.PutOptions{Tube: putTube, TTR: time.Minute})
		})
	}
	close(start)
	wg.Wait()
	st, err := p0.ServerStats(ctx(t))
	require.NoError(t, err)
	require.LessOrEqual(t, atoi(t, st["total-connections"])-atoi(t, st0["total-connections"]), 2, "connections")
	require.Equal(t, n+100, atoi(t, st["cmd-stats-job"])-atoi(t, st0["cmd-stats-job"]), "each stats-job sent once")

	for i, id := range known {
		require.NoError(t, errs[i], "stats-job %d", id)
		state := job.StateReady
		if i%3 > 0 {
			state = job.StateDelayed
		}
		require.Equal(t, job.Stats{ID: id, Tube: tubes[i%2], State: state, Pri: uint32(i), TTR: 60, Delay: uint64(i%3) * 3600},
			job.Stats{ID: stats[i].ID, Tube: stats[i].Tube, State: stats[i].State, Pri: stats[i].Pri, TTR: stats[i].TTR, Delay: stats[i].Delay})
	}
	for i := range unknownErrs {
		require.ErrorIs(t, unknownErrs[i], queue.ErrNotFound)
		require.NoError(t, putErrs[i])
		s, err := p0.StatsJob(ctx(t), putIDs[i])
		require.NoError(t, err)
		require.Equal(t, putTube, s.Tube)
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	require.NoError(t, err, "%q", s)
	return n
}

// A put whose caller gives up while it waits for a connection is not
// sent; the server dying under a pipeline fails every put and stats-job in
// it with ErrUnavailable, quickly.
func TestPipelinedPutsFailTogetherAndCancel(t *testing.T) {
	t.Parallel()
	bs := testenv.StartBeanstalkd(t, testenv.BeanstalkdOptions{})
	p := queue.NewPool(queue.PoolConfig{Addr: bs.Addr(), Timeout: 500 * time.Millisecond})
	defer p.Close()

	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := p.Put(cancelled, []byte("x"), queue.PutOptions{TTR: time.Second})
	require.ErrorIs(t, err, context.Canceled)
	st, err := p.ServerStats(ctx(t))
	require.NoError(t, err)
	require.Equal(t, "0", st["cmd-put"], "a cancelled put went out")

	bs.Stop()
	var wg sync.WaitGroup
	start := time.Now()
	for i := range 50 {
		wg.Go(func() {
			_, err := p.Put(ctx(t), []byte("x"), queue.PutOptions{TTR: time.Second})
			assert.ErrorIs(t, err, queue.ErrUnavailable)
		})
		wg.Go(func() {
			_, err := p.StatsJob(ctx(t), uint64(i+1))
			assert.ErrorIs(t, err, queue.ErrUnavailable)
		})
	}
	wg.Wait()
	require.Less(t, time.Since(start), 2*time.Second)

	require.NoError(t, bs.Restart())
	require.Eventually(t, func() bool {
		_, err := p.Put(ctx(t), []byte("back"), queue.PutOptions{TTR: time.Second})
		return err == nil
	}, 10*time.Second, 50*time.Millisecond)
}

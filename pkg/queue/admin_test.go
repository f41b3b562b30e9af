package queue_test

import (
	"net"
	"testing"
	"time"

	"github.com/beanstalkd/go-beanstalk"
	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/queue"
	"github.com/jobsys/jobs/pkg/testenv"
)

// buryAll reserves every ready job of tube and buries it, as a worker
// whose handler fails for good does.
func buryAll(t *testing.T, addr, tube string) []uint64 {
	t.Helper()
	c, err := beanstalk.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	ts := beanstalk.NewTubeSet(c, tube)
	var ids []uint64
	for {
		id, _, err := ts.Reserve(0)
		if err != nil {
			require.ErrorIs(t, err, beanstalk.ErrTimeout)
			return ids
		}
		require.NoError(t, c.Bury(id, 0))
		ids = append(ids, id)
	}
}

// Every Admin operation against a beanstalkd of the test's own.
func TestAdminOperations(t *testing.T) {
	t.Parallel()
	bs := testenv.StartBeanstalkd(t, testenv.BeanstalkdOptions{})
	ctx := testenv.Context(t, 30*time.Second)
	p := queue.NewPool(queue.PoolConfig{Addr: bs.Addr()})
	t.Cleanup(func() { _ = p.Close() })
	a := queue.NewAdmin(bs.Addr(), 2*time.Second)
	require.NoError(t, a.Ping(ctx))

	var ids []uint64
	for _, body := range []string{`{"n":1}`, `{"n":2}`, `{"n":3}`} {
		id, err := p.Put(ctx, []byte(body), queue.PutOptions{Tube: "ops", TTR: time.Minute})
		require.NoError(t, err)
		ids = append(ids, id)
	}
	delayed, err := p.Put(ctx, []byte(`{"later":true}`), queue.PutOptions{Tube: "ops", TTR: time.Minute, Delay: time.Hour})
	require.NoError(t, err)

	names, err := a.Tubes(ctx)
	require.NoError(t, err)
	require.Contains(t, names, "ops")

	next, err := a.PeekNext(ctx, "ops", "ready")
	require.NoError(t, err)
	require.Equal(t, queue.Peeked{ID: ids[0], Body: []byte(`{"n":1}`)}, next, "peek-ready is the oldest ready job")
	next, err = a.PeekNext(ctx, "ops", "delayed")
	require.NoError(t, err)
	require.Equal(t, delayed, next.ID)
	_, err = a.PeekNext(ctx, "ops", "buried")
	require.ErrorIs(t, err, queue.ErrNotFound, "nothing buried yet")

	require.Equal(t, ids, buryAll(t, bs.Addr(), "ops"))
	info, err := a.Tube(ctx, "ops")
	require.NoError(t, err)
	require.Equal(t, "ops", info.Name)
	require.Equal(t, uint64(3), info.CurrentJobsBuried)
	require.Equal(t, uint64(1), info.CurrentJobsDelayed)
	require.Equal(t, uint64(4), info.TotalJobs)

	body, err := a.Peek(ctx, ids[1])
	require.NoError(t, err)
	require.Equal(t, `{"n":2}`, string(body))

	require.NoError(t, a.KickJob(ctx, ids[0]))
	n, err := a.Kick(ctx, "ops", 100)
	require.NoError(t, err)
	require.Equal(t, 2, n, "kick moves the buried jobs that are left, not the delayed one")
	n, err = a.Kick(ctx, "ops", 100)
	require.NoError(t, err)
	require.Equal(t, 1, n, "with none buried, kick moves the delayed")

	require.NoError(t, a.Delete(ctx, ids[2]))
	_, err = a.Peek(ctx, ids[2])
	require.ErrorIs(t, err, queue.ErrNotFound)
	require.ErrorIs(t, a.Delete(ctx, ids[2]), queue.ErrNotFound)
	require.ErrorIs(t, a.KickJob(ctx, ids[1]), queue.ErrNotFound, "a ready job cannot be kicked")

	require.NoError(t, a.PauseTube(ctx, "ops", 30*time.Second))
	info, err = a.Tube(ctx, "ops")
	require.NoError(t, err)
	require.Equal(t, uint64(30), info.Pause)
	require.InDelta(t, 30, float64(info.PauseTimeLeft), 2)
	require.NoError(t, a.PauseTube(ctx, "ops", 0))
	info, err = a.Tube(ctx, "ops")
	require.NoError(t, err)
	require.Zero(t, info.Pause, "pause 0 resumes")

	stats, err := a.TubeStats(ctx, []string{"ops", "never-was"})
	require.NoError(t, err)
	require.Len(t, stats, 1, "a tube that does not exist is left out")

	_, err = a.Tube(ctx, "never-was")
	require.ErrorIs(t, err, queue.ErrNotFound)
	_, err = a.Tube(ctx, "-bad")
	require.ErrorIs(t, err, queue.ErrBadTube)
	require.Error(t, a.PauseTube(ctx, "ops", queue.MaxPause+time.Second))
}

// A beanstalkd that accepts and never answers costs a call its timeout,
// and the error says the queue is unavailable.
func TestAdminTimesOut(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { _ = c.Close() })
		}
	}()
	a := queue.NewAdmin(ln.Addr().String(), 300*time.Millisecond)
	start := time.Now()
	_, err = a.Tubes(testenv.Context(t, 10*time.Second))
	require.ErrorIs(t, err, queue.ErrUnavailable)
	require.Less(t, time.Since(start), 2*time.Second)

	closed := queue.NewAdmin("127.0.0.1:1", time.Second)
	require.ErrorIs(t, closed.Ping(testenv.Context(t, 10*time.Second)), queue.ErrUnavailable)
}

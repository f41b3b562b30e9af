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

// Every operations command of the pool against a beanstalkd of the
// test's own.
func TestPoolOperations(t *testing.T) {
	t.Parallel()
	bs := testenv.StartBeanstalkd(t, testenv.BeanstalkdOptions{})
	ctx := testenv.Context(t, 30*time.Second)
	p := queue.NewPool(queue.PoolConfig{Addr: bs.Addr()})
	t.Cleanup(func() { _ = p.Close() })
	require.NoError(t, p.Ping(ctx))

	var ids []uint64
	for _, body := range []string{`{"n":1}`, `{"n":2}`, `{"n":3}`} {
		id, err := p.Put(ctx, []byte(body), queue.PutOptions{Tube: "ops", TTR: time.Minute})
		require.NoError(t, err)
		ids = append(ids, id)
	}
	delayed, err := p.Put(ctx, []byte(`{"later":true}`), queue.PutOptions{Tube: "ops", TTR: time.Minute, Delay: time.Hour})
	require.NoError(t, err)

	names, err := p.TubeNames(ctx)
	require.NoError(t, err)
	require.Contains(t, names, "ops")

	next, err := p.PeekNext(ctx, "ops", "ready")
	require.NoError(t, err)
	require.Equal(t, queue.Peeked{ID: ids[0], Body: []byte(`{"n":1}`)}, next, "peek-ready is the oldest ready job")
	next, err = p.PeekNext(ctx, "ops", "delayed")
	require.NoError(t, err)
	require.Equal(t, delayed, next.ID)
	_, err = p.PeekNext(ctx, "ops", "buried")
	require.ErrorIs(t, err, queue.ErrNotFound, "nothing buried yet")

	require.Equal(t, ids, buryAll(t, bs.Addr(), "ops"))
	info, err := p.Tube(ctx, "ops")
	require.NoError(t, err)
	require.Equal(t, "ops", info.Name)
	require.Equal(t, uint64(3), info.CurrentJobsBuried)
	require.Equal(t, uint64(1), info.CurrentJobsDelayed)
	require.Equal(t, uint64(4), info.TotalJobs)

	body, err := p.Peek(ctx, ids[1])
	require.NoError(t, err)
	require.Equal(t, `{"n":2}`, string(body))

	require.NoError(t, p.Kick(ctx, ids[0]))
	n, err := p.KickTube(ctx, "ops", 100)
	require.NoError(t, err)
	require.Equal(t, 2, n, "kick moves the buried jobs that are left, not the delayed one")
	n, err = p.KickTube(ctx, "ops", 100)
	require.NoError(t, err)
	require.Equal(t, 1, n, "with none buried, kick moves the delayed")

	require.NoError(t, p.Delete(ctx, ids[2]))
	_, err = p.Peek(ctx, ids[2])
	require.ErrorIs(t, err, queue.ErrNotFound)
	require.ErrorIs(t, p.Delete(ctx, ids[2]), queue.ErrNotFound)
	require.ErrorIs(t, p.Kick(ctx, ids[1]), queue.ErrNotFound, "a ready job cannot be kicked")

	require.NoError(t, p.PauseTube(ctx, "ops", 30*time.Second))
	info, err = p.Tube(ctx, "ops")
	require.NoError(t, err)
	require.Equal(t, uint64(30), info.Pause)
	require.InDelta(t, 30, float64(info.PauseTimeLeft), 2)
	require.NoError(t, p.PauseTube(ctx, "ops", 0))
	info, err = p.Tube(ctx, "ops")
	require.NoError(t, err)
	require.Zero(t, info.Pause, "pause 0 resumes")

	stats, err := p.TubeInfos(ctx, []string{"ops", "never-was"})
	require.NoError(t, err)
	require.Len(t, stats, 1, "a tube that does not exist is left out")

	_, err = p.Tube(ctx, "never-was")
	require.ErrorIs(t, err, queue.ErrNotFound)
	_, err = p.Tube(ctx, "-bad")
	require.ErrorIs(t, err, queue.ErrBadTube)
	require.Error(t, p.PauseTube(ctx, "ops", queue.MaxPause+time.Second))
	_, err = p.PeekNext(ctx, "ops", "reserved")
	require.ErrorContains(t, err, "no peek for state")
}

// A beanstalkd that accepts and never answers costs a call its timeout,
// and the error says the queue is unavailable.
func TestPoolOperationsTimeOut(t *testing.T) {
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
	p := queue.NewPool(queue.PoolConfig{Addr: ln.Addr().String(), Timeout: 300 * time.Millisecond})
	t.Cleanup(func() { _ = p.Close() })
	start := time.Now()
	_, err = p.TubeNames(testenv.Context(t, 10*time.Second))
	require.ErrorIs(t, err, queue.ErrUnavailable)
	require.Less(t, time.Since(start), 2*time.Second)

	closed := queue.NewPool(queue.PoolConfig{Addr: "127.0.0.1:1", Timeout: time.Second})
	require.ErrorIs(t, closed.Ping(testenv.Context(t, 10*time.Second)), queue.ErrUnavailable)
}

package queue_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/queue"
	"github.com/jobsys/jobs/pkg/testenv"
)

// beanstalkd's refusals fail one call each and leave the connection as it
// was: the pool and the consumer each dial once for all of them.
func TestRefusalsKeepTheConnection(t *testing.T) {
	t.Parallel()
	bs := testenv.StartBeanstalkd(t, testenv.BeanstalkdOptions{})
	p := queue.NewPool(queue.PoolConfig{Addr: bs.Addr()})
	defer p.Close()
	st0, err := p.ServerStats(ctx(t))
	require.NoError(t, err)

	const unknown = 1_000_000
	require.ErrorIs(t, p.Delete(ctx(t), unknown), queue.ErrNotFound)
	require.ErrorIs(t, p.Kick(ctx(t), unknown), queue.ErrNotFound)
	_, err = p.StatsJob(ctx(t), unknown)
	require.ErrorIs(t, err, queue.ErrNotFound)
	st, err := p.TubeStats(ctx(t), []string{"nope", "default"})
	require.NoError(t, err)
	require.Len(t, st, 1)

	c := queue.NewConsumer(bs.Addr(), []string{"default"}, 0)
	defer c.Close()
	_, err = p.Put(ctx(t), []byte("x"), queue.PutOptions{TTR: time.Minute})
	require.NoError(t, err)
	r, err := c.Reserve(ctx(t), time.Second)
	require.NoError(t, err)
	require.ErrorIs(t, c.Delete(ctx(t), unknown), queue.ErrNotFound)
	require.ErrorIs(t, c.Release(ctx(t), unknown, 0, 0), queue.ErrNotFound)
	require.ErrorIs(t, c.Bury(ctx(t), unknown, 0), queue.ErrNotFound)
	require.ErrorIs(t, c.Touch(ctx(t), unknown), queue.ErrNotFound)
	require.NoError(t, c.Release(ctx(t), r.ID, 5, 0))
	r, err = c.Reserve(ctx(t), time.Second)
	require.NoError(t, err)
	require.EqualValues(t, 5, r.Priority)
	require.EqualValues(t, 2, r.Reserves)

	// Draining (SIGUSR1): beanstalkd takes no new jobs.
	pid, err := strconv.Atoi(st0["pid"])
	require.NoError(t, err)
	require.NoError(t, syscall.Kill(pid, syscall.SIGUSR1))
	require.Eventually(t, func() bool {
		m, err := p.ServerStats(ctx(t))
		require.NoError(t, err)
		return m["draining"] == "true"
	}, 5*time.Second, 10*time.Millisecond)
	_, err = p.Put(ctx(t), []byte("x"), queue.PutOptions{TTR: time.Minute})
	require.ErrorIs(t, err, queue.ErrDraining)
	require.NoError(t, c.Delete(ctx(t), r.ID), "a reserved job can still be finished")

	end, err := p.ServerStats(ctx(t))
	require.NoError(t, err)
	require.Equal(t, 1, atoi(t, end["total-connections"])-atoi(t, st0["total-connections"]),
		"one more connection, the consumer's: the pool kept the one that asked for st0")
}

// After beanstalkd restarts, the pool's idle connections all point at the
// dead process, which closed them: the pool sees that before it writes
// and dials a fresh one, so no call fails, however many connections were
// idle (a /readyz right after a restart used to say "unreachable").
func TestPoolSkipsIdleConnectionsClosedByARestart(t *testing.T) {
	t.Parallel()
	bs := testenv.StartBeanstalkd(t, testenv.BeanstalkdOptions{})
	p := queue.NewPool(queue.PoolConfig{Addr: bs.Addr()})
	defer p.Close()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() { require.NoError(t, p.Ping(ctx(t))) })
	}
	wg.Wait()
	st, err := p.ServerStats(ctx(t))
	require.NoError(t, err)
	require.Greater(t, atoi(t, st["total-connections"]), 2, "several connections are idle")

	for range 2 {
		bs.Stop()
		require.NoError(t, bs.Restart())
		require.NoError(t, p.Ping(ctx(t)))
		_, err = p.Put(ctx(t), []byte("x"), queue.PutOptions{TTR: time.Minute})
		require.NoError(t, err)
	}
}

// A connection that fails mid-call drops every idle one with it.
func TestPoolDropsIdleConnectionsAfterAFailure(t *testing.T) {
	t.Parallel()
	bs := testenv.StartBeanstalkd(t, testenv.BeanstalkdOptions{})
	p := queue.NewPool(queue.PoolConfig{Addr: bs.Addr(), Timeout: 300 * time.Millisecond})
	defer p.Close()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() { require.NoError(t, p.Ping(ctx(t))) })
	}
	wg.Wait()
	st, err := p.ServerStats(ctx(t))
	require.NoError(t, err)
	pid := atoi(t, st["pid"])
	require.NoError(t, syscall.Kill(pid, syscall.SIGSTOP))
	require.ErrorIs(t, p.Ping(ctx(t)), queue.ErrUnavailable, "a frozen beanstalkd times out")
	require.NoError(t, syscall.Kill(pid, syscall.SIGCONT))
	require.NoError(t, p.Ping(ctx(t)))
	end, err := p.ServerStats(ctx(t))
	require.NoError(t, err)
	require.Equal(t, atoi(t, st["total-connections"])+1, atoi(t, end["total-connections"]),
		"after the timeout the idle connections were dropped and one new one dialed")
}

// SetOnConnect's hook sees every connection dialed after it is set, with
// the server's stats, before the connection is used; its error fails the
// call, and the connection is not kept.
func TestOnConnect(t *testing.T) {
	t.Parallel()
	bs := testenv.StartBeanstalkd(t, testenv.BeanstalkdOptions{})
	p := queue.NewPool(queue.PoolConfig{Addr: bs.Addr()})
	defer p.Close()
	require.NoError(t, p.Ping(ctx(t)), "dialed before the hook")

	var seen []map[string]string // calls are one at a time here
	refuse := errors.New("refused by the hook")
	var fail bool
	p.SetOnConnect(func(_ context.Context, stats map[string]string) error {
		seen = append(seen, stats)
		if fail {
			return refuse
		}
		return nil
	})
	require.NoError(t, p.Ping(ctx(t)))
	require.Empty(t, seen, "the connection dialed before is not shown")

	p.Close()
	_, err := p.Put(ctx(t), []byte("x"), queue.PutOptions{TTR: time.Minute})
	require.NoError(t, err)
	require.Len(t, seen, 1)
	require.Equal(t, "0", seen[0]["cmd-put"], "the hook runs before the connection is used")
	require.NotEmpty(t, seen[0]["pid"])

	p.Close()
	fail = true
	_, err = p.Put(ctx(t), []byte("x"), queue.PutOptions{TTR: time.Minute})
	require.ErrorIs(t, err, refuse)
	fail = false
	require.NoError(t, p.Ping(ctx(t)))
	require.Len(t, seen, 3, "the refused connection was not kept")

	p.SetOnConnect(nil)
	p.Close()
	require.NoError(t, p.Ping(ctx(t)))
	require.Len(t, seen, 3)
	st, err := p.ServerStats(ctx(t))
	require.NoError(t, err)
	require.Equal(t, "1", st["cmd-put"], "the refused put was not sent")
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	require.NoError(t, err)
	return n
}

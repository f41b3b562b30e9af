package queue_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/queue"
	"github.com/jobsys/jobs/pkg/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func ctx(t *testing.T) context.Context { return testenv.Context(t, 20*time.Second) }

func TestPutStatsReserveDelete(t *testing.T) {
	t.Parallel()
	b := testenv.Setup(t)
	p := queue.NewPool(queue.PoolConfig{Addr: b.Beanstalk.Addr()})
	defer p.Close()

	id, err := p.Put(ctx(t), []byte(`{"a":1}`), queue.PutOptions{Tube: b.Tube, Priority: 7, TTR: 30 * time.Second})
	require.NoError(t, err)

	s, err := p.StatsJob(ctx(t), id)
	require.NoError(t, err)
	require.Equal(t, job.Stats{ID: id, Tube: b.Tube, State: job.StateReady, Pri: 7, TTR: 30}, zeroAge(s))

	c := queue.NewConsumer(b.Beanstalk.Addr(), []string{b.Tube}, 0)
	defer c.Close()
	r, err := c.Reserve(ctx(t), time.Second)
	require.NoError(t, err)
	require.Equal(t, id, r.ID)
	require.Equal(t, `{"a":1}`, string(r.Body))
	require.Equal(t, b.Tube, r.Tube)
	require.EqualValues(t, 1, r.Reserves)
	require.Equal(t, 30*time.Second, r.TTR)

	// Another connection cannot delete a job this consumer holds.
	s, err = p.StatsJob(ctx(t), id)
	require.NoError(t, err)
	require.Equal(t, job.StateReserved, s.State)
	require.ErrorIs(t, p.Delete(ctx(t), id), queue.ErrNotFound)

	require.NoError(t, c.Touch(ctx(t), id))
	require.NoError(t, c.Delete(ctx(t), id))
	_, err = p.StatsJob(ctx(t), id)
	require.ErrorIs(t, err, queue.ErrNotFound)

	_, err = c.Reserve(ctx(t), 0)
	require.ErrorIs(t, err, queue.ErrNoJob)
}

func zeroAge(s job.Stats) job.Stats {
	s.Age, s.TimeLeft, s.File = 0, 0, 0
	return s
}

func TestBuryKickAndTubes(t *testing.T) {
	t.Parallel()
	b := testenv.Setup(t)
	p := queue.NewPool(queue.PoolConfig{Addr: b.Beanstalk.Addr()})
	defer p.Close()

	id, err := p.Put(ctx(t), []byte("x"), queue.PutOptions{Tube: b.Tube, TTR: time.Minute})
	require.NoError(t, err)
	c := queue.NewConsumer(b.Beanstalk.Addr(), []string{b.Tube}, 0)
	defer c.Close()
	r, err := c.Reserve(ctx(t), time.Second)
	require.NoError(t, err)
	require.NoError(t, c.Bury(ctx(t), r.ID, 0))

	tubes, err := p.Tubes(ctx(t))
	require.NoError(t, err)
	require.Equal(t, job.TubeStats{Buried: 1, Watching: 1}, tubes[b.Tube])

	require.NoError(t, p.Kick(ctx(t), id))
	s, err := p.StatsJob(ctx(t), id)
	require.NoError(t, err)
	require.Equal(t, job.StateReady, s.State)
	require.EqualValues(t, 1, s.Kicks)
	require.NoError(t, p.Delete(ctx(t), id))
}

func TestMaxJobSizeAndTooBig(t *testing.T) {
	t.Parallel()
	bs := testenv.StartBeanstalkd(t, testenv.BeanstalkdOptions{MaxJobSize: 100})
	p := queue.NewPool(queue.PoolConfig{Addr: bs.Addr()})
	defer p.Close()
	n, err := p.MaxJobSize(ctx(t))
	require.NoError(t, err)
	require.Equal(t, 100, n)
	_, err = p.Put(ctx(t), make([]byte, 101), queue.PutOptions{TTR: time.Second})
	require.ErrorIs(t, err, queue.ErrJobTooBig)
	// The connection stays usable after a protocol error.
	_, err = p.Put(ctx(t), []byte("ok"), queue.PutOptions{TTR: time.Second})
	require.NoError(t, err)
}

func TestUnreachableFailsFastAndRecovers(t *testing.T) {
	t.Parallel()
	bs := testenv.StartBeanstalkd(t, testenv.BeanstalkdOptions{})
	p := queue.NewPool(queue.PoolConfig{Addr: bs.Addr(), Timeout: 500 * time.Millisecond})
	defer p.Close()
	require.NoError(t, p.Ping(ctx(t)))

	bs.Stop()
	start := time.Now()
	_, err := p.Put(ctx(t), []byte("x"), queue.PutOptions{TTR: time.Second})
	require.ErrorIs(t, err, queue.ErrUnavailable)
	require.Less(t, time.Since(start), 2*time.Second)

	require.NoError(t, bs.Restart())
	require.Eventually(t, func() bool { return p.Ping(ctx(t)) == nil }, 10*time.Second, 50*time.Millisecond)
}

func TestConsumerReconnects(t *testing.T) {
	t.Parallel()
	bs := testenv.StartBeanstalkd(t, testenv.BeanstalkdOptions{})
	c := queue.NewConsumer(bs.Addr(), []string{"default"}, 500*time.Millisecond)
	defer c.Close()
	_, err := c.Reserve(ctx(t), 0)
	require.ErrorIs(t, err, queue.ErrNoJob)

	bs.Stop()
	_, err = c.Reserve(ctx(t), 0)
	require.ErrorIs(t, err, queue.ErrUnavailable)
	require.NoError(t, bs.Restart())

	p := queue.NewPool(queue.PoolConfig{Addr: bs.Addr()})
	defer p.Close()
	id, err := p.Put(ctx(t), []byte("after"), queue.PutOptions{TTR: time.Minute})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		r, err := c.Reserve(ctx(t), 0)
		if errors.Is(err, queue.ErrNoJob) || errors.Is(err, queue.ErrUnavailable) {
			return false
		}
		require.NoError(t, err)
		return r.ID == id
	}, 10*time.Second, 50*time.Millisecond)
}

func TestValidateTube(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"default", "a-b", "x+y/z;1.2$3_(4)"} {
		require.NoError(t, queue.ValidateTube(ok), ok)
	}
	for _, bad := range []string{"", "-x", "a b", "ü", string(make([]byte, 201))} {
		require.ErrorIs(t, queue.ValidateTube(bad), queue.ErrBadTube, bad)
	}
}

package queue_test

import (
	"context"
	"errors"
	"os"
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

// DeleteAndReserve deletes the job it is given and reserves the next, in
// one write: the delete's outcome is reported once, before the reserve's
// wait, also when the job is not this consumer's to delete, when the
// context is already done, and when beanstalkd is gone. Only the
// consumer's tubes are watched, never default.
func TestDeleteAndReserve(t *testing.T) {
	t.Parallel()
	bs := testenv.StartBeanstalkd(t, testenv.BeanstalkdOptions{})
	p := queue.NewPool(queue.PoolConfig{Addr: bs.Addr()})
	defer p.Close()
	tube, other := "d-"+testenv.RandomName(), "o-"+testenv.RandomName()
	_, err := p.Put(ctx(t), []byte("in default"), queue.PutOptions{TTR: time.Minute})
	require.NoError(t, err)
	var ids []uint64
	for i := range 4 {
		id, err := p.Put(ctx(t), []byte{'a' + byte(i)}, queue.PutOptions{Tube: []string{tube, other}[i%2], Priority: uint32(10 + i), TTR: time.Duration(10+i) * time.Second})
		require.NoError(t, err)
		ids = append(ids, id)
	}

	c := queue.NewConsumer(bs.Addr(), []string{tube, other}, time.Second)
	defer c.Close()
	r, err := c.Reserve(ctx(t), time.Second)
	require.NoError(t, err)
	require.Equal(t, ids[0], r.ID)

	var outcomes []error
	record := func(err error) { outcomes = append(outcomes, err) }
	for i := 1; i < 4; i++ {
		prev := r.ID
		r, err = c.DeleteAndReserve(ctx(t), prev, time.Second, record)
		require.NoError(t, err)
		require.Len(t, outcomes, i)
		require.NoError(t, outcomes[i-1], "delete %d", prev)
		_, err = p.StatsJob(ctx(t), prev)
		require.ErrorIs(t, err, queue.ErrNotFound, "job %d deleted", prev)
		require.Equal(t, queue.Reserved{ID: ids[i], Body: []byte{'a' + byte(i)}, Tube: []string{tube, other}[i%2],
			Reserves: 1, Priority: uint32(10 + i), TTR: time.Duration(10+i) * time.Second}, r)
	}

	// Not this consumer's job: reported, and the reserve still runs (and
	// finds nothing: the job in default is not watched).
	outcomes = nil
	_, err = c.DeleteAndReserve(ctx(t), 1_000_000, 0, record)
	require.ErrorIs(t, err, queue.ErrNoJob)
	require.Len(t, outcomes, 1)
	require.ErrorIs(t, outcomes[0], queue.ErrNotFound)

	// The context is done: the delete is still made, the reserve is not.
	outcomes = nil
	done, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = c.DeleteAndReserve(done, ids[3], time.Second, record)
	require.ErrorIs(t, err, context.Canceled)
	require.Len(t, outcomes, 1)
	require.NoError(t, outcomes[0])
	_, err = p.StatsJob(ctx(t), ids[3])
	require.ErrorIs(t, err, queue.ErrNotFound)

	// beanstalkd gone: one outcome, ErrUnavailable, for both.
	id, err := p.Put(ctx(t), []byte("last"), queue.PutOptions{Tube: tube, TTR: time.Minute})
	require.NoError(t, err)
	r, err = c.Reserve(ctx(t), time.Second)
	require.NoError(t, err)
	require.Equal(t, id, r.ID)
	bs.Stop()
	outcomes = nil
	_, err = c.DeleteAndReserve(ctx(t), id, time.Second, record)
	require.ErrorIs(t, err, queue.ErrUnavailable)
	require.Len(t, outcomes, 1)
	require.ErrorIs(t, outcomes[0], queue.ErrUnavailable)
}

// A beanstalkd whose binlog cannot grow (its disk full, here its
// directory gone) answers puts with OUT_OF_MEMORY: the put fails with
// ErrServerFault, the connection stays, and Ping reports the fault while
// it lasts, though stats still answer.
func TestOutOfMemoryIsAServerFault(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bs := testenv.StartBeanstalkd(t, testenv.BeanstalkdOptions{BinlogDir: dir, FsyncMS: -1, BinlogSize: 2000})
	p := queue.NewPool(queue.PoolConfig{Addr: bs.Addr()})
	defer p.Close()
	require.NoError(t, p.Ping(ctx(t)))
	require.NoError(t, os.RemoveAll(dir))
	var err error
	for range 100 {
		if _, err = p.Put(ctx(t), make([]byte, 200), queue.PutOptions{TTR: time.Minute}); err != nil {
			break
		}
	}
	require.ErrorIs(t, err, queue.ErrServerFault)
	require.ErrorContains(t, err, "binlog disk full")
	require.ErrorIs(t, p.Ping(ctx(t)), queue.ErrServerFault)
	_, err = p.ServerStats(ctx(t))
	require.NoError(t, err)
}

// PutHeld's job cannot be reserved while its id is being checked; it is
// kicked to ready once check agrees, withdrawn when check refuses, and a
// delayed job keeps its own delay.
func TestPutHeld(t *testing.T) {
	t.Parallel()
	b := testenv.Setup(t)
	p := b.Pool(t)
	c := queue.NewConsumer(b.Beanstalk.Addr(), []string{b.Tube}, 0)
	defer c.Close()
	o := queue.PutOptions{Tube: b.Tube, TTR: time.Minute}
	reserved := make(chan error, 1)
	id, err := p.PutHeld(ctx(t), []byte("held"), o, time.Minute, func(_ context.Context, id uint64, _ string) error {
		_, err := c.Reserve(ctx(t), time.Second)
		reserved <- err
		return nil
	})
	require.NoError(t, err)
	require.ErrorIs(t, <-reserved, queue.ErrNoJob, "nothing to reserve while the check runs")
	r, err := c.Reserve(ctx(t), time.Second)
	require.NoError(t, err)
	require.Equal(t, id, r.ID)
	require.NoError(t, c.Delete(ctx(t), r.ID))

	refuse := errors.New("not proven")
	_, err = p.PutHeld(ctx(t), []byte("refused"), o, time.Minute, func(context.Context, uint64, string) error { return refuse })
	require.ErrorIs(t, err, refuse)
	st, err := p.TubeStats(ctx(t), []string{b.Tube})
	require.NoError(t, err)
	require.Zero(t, st[b.Tube].Ready+st[b.Tube].Delayed, "the refused job was withdrawn")

	o.Delay = 30 * time.Second
	id, err = p.PutHeld(ctx(t), []byte("later"), o, time.Minute, func(context.Context, uint64, string) error { return nil })
	require.NoError(t, err)
	s, err := p.StatsJob(ctx(t), id)
	require.NoError(t, err)
	require.Equal(t, "delayed", string(s.State))
	require.EqualValues(t, 30, s.Delay)
}

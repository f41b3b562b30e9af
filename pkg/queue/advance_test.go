package queue_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/queue"
	"github.com/jobsys/jobs/pkg/testenv"
)

func TestAdvanceMovesIDsPastAndLeavesNoJobs(t *testing.T) {
	t.Parallel()
	bs := testenv.StartBeanstalkd(t, testenv.BeanstalkdOptions{})
	p := queue.NewPool(queue.PoolConfig{Addr: bs.Addr()})
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	first, err := p.Put(ctx, []byte("{}"), queue.PutOptions{Tube: "work", TTR: time.Minute})
	require.NoError(t, err)
	require.EqualValues(t, 1, first)

	last, err := p.Advance(ctx, "_fence", 2500)
	require.NoError(t, err)
	require.EqualValues(t, 2501, last, "the counter stops right past the fence")

	id, err := p.Put(ctx, []byte("{}"), queue.PutOptions{Tube: "work", TTR: time.Minute})
	require.NoError(t, err)
	require.Equal(t, last+1, id)

	tubes, err := p.Tubes(ctx)
	require.NoError(t, err)
	require.Zero(t, tubes["_fence"].Ready+tubes["_fence"].Delayed+tubes["_fence"].Buried+tubes["_fence"].Reserved,
		"every throwaway job is deleted")

	// Already past: one throwaway job, the counter moves by one.
	last, err = p.Advance(ctx, "_fence", 10)
	require.NoError(t, err)
	require.Equal(t, id+1, last)

	_, err = p.Advance(ctx, "bad tube", 10)
	require.ErrorIs(t, err, queue.ErrBadTube)
}

func TestAdvanceFailsFastWhenDown(t *testing.T) {
	t.Parallel()
	bs := testenv.StartBeanstalkd(t, testenv.BeanstalkdOptions{})
	bs.Stop()
	p := queue.NewPool(queue.PoolConfig{Addr: bs.Addr()})
	start := time.Now()
	_, err := p.Advance(context.Background(), "_fence", 10)
	require.ErrorIs(t, err, queue.ErrUnavailable)
	require.Less(t, time.Since(start), 3*time.Second)
}

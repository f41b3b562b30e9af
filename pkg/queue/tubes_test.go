package queue_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/queue"
	"github.com/jobsys/jobs/pkg/testenv"
)

// TubeNames, TubeStats and Totals on a beanstalkd of this test's own, so
// the totals are exact.
func TestTubeNamesStatsAndTotals(t *testing.T) {
	t.Parallel()
	bs := testenv.StartBeanstalkd(t, testenv.BeanstalkdOptions{})
	p := queue.NewPool(queue.PoolConfig{Addr: bs.Addr()})
	t.Cleanup(func() { _ = p.Close() })
	for tube, n := range map[string]int{"a": 3, "b": 1} {
		for range n {
			_, err := p.Put(ctx(t), []byte("{}"), queue.PutOptions{Tube: tube, TTR: time.Minute})
			require.NoError(t, err)
		}
	}
	names, err := p.TubeNames(ctx(t))
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"default", "a", "b"}, names)

	st, err := p.TubeStats(ctx(t), []string{"a", "gone"})
	require.NoError(t, err)
	require.Len(t, st, 1, "a tube that does not exist is left out")
	require.Equal(t, uint64(3), st["a"].Ready)

	totals, tubes, err := p.Totals(ctx(t))
	require.NoError(t, err)
	require.Equal(t, uint64(4), totals.Ready)
	require.Equal(t, 3, tubes)
}

package queue

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/beanstalkd/go-beanstalk"
)

// advanceBatch is how many throwaway jobs Advance has in flight at once.
const advanceBatch = 512

// Advance moves beanstalkd's job id counter past id: it puts throwaway
// jobs in tube and deletes them until beanstalkd has handed out an id
// larger than past, and returns the last id it used. A service calls it
// when beanstalkd was restarted without a binlog and began its ids at 1
// again, so that new jobs never reuse the ids of older ones.
//
// The throwaway jobs are delayed by an hour, so that nothing can reserve
// one in the moment before it is deleted. Advance uses a connection of
// its own, with many commands in flight on it: go-beanstalk's Conn
// pipelines concurrent calls (net/textproto), so a batch of puts, each
// followed by its delete, costs about two round trips. Each batch runs
// under the pool's command timeout and ctx.
func (p *Pool) Advance(ctx context.Context, tube string, past uint64) (uint64, error) {
	if err := ValidateTube(tube); err != nil {
		return 0, err
	}
	c, err := dial(ctx, p.addr, p.timeout)
	if err != nil {
		return 0, fmt.Errorf("advance ids: %w", err)
	}
	defer c.close()
	var last uint64
	n := 1 // the first put learns where the counter is
	for {
		ids := make([]uint64, n)
		_, err := c.call(ctx, p.timeout, "advance ids", func(bc *beanstalk.Conn) error {
			return inFlight(n, func(i int) error {
				id, err := put(bc, tube, []byte("x"), PutOptions{Priority: MaxPriority}, time.Hour)
				if _, ok := buriedID(err); ok {
					err = nil // a job all the same: its id is taken, and it must go
				}
				ids[i] = id
				if err != nil {
					return err
				}
				if err := bc.Delete(id); !errors.Is(err, beanstalk.ErrNotFound) {
					return err
				}
				return nil
			})
		})
		last = max(last, slices.Max(ids))
		if err != nil {
			return last, err
		}
		if last > past {
			return last, nil
		}
		n = int(min(past-last+1, advanceBatch))
	}
}

// inFlight runs f(0) to f(n-1) at once and returns their errors joined.
func inFlight(n int, f func(i int) error) error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = f(i) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

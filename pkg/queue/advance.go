package queue

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"
)

// advanceBatch is how many throwaway puts (and then deletes) Advance sends
// before it reads their answers.
const advanceBatch = 1000

// Advance moves beanstalkd's job id counter past id: it puts throwaway
// jobs in tube and deletes them until beanstalkd has handed out an id
// larger than past, and returns the last id it used. A service calls it
// when beanstalkd was restarted without a binlog and began its ids at 1
// again, so that new jobs never reuse the ids of older ones.
//
// The throwaway jobs are delayed by an hour, so that nothing can reserve
// one in the moment before it is deleted. Commands are pipelined in
// batches on a connection of Advance's own; each batch runs under the
// pool's command timeout and ctx.
func (p *Pool) Advance(ctx context.Context, tube string, past uint64) (uint64, error) {
	if err := ValidateTube(tube); err != nil {
		return 0, err
	}
	dctx, cancel := context.WithTimeout(ctx, p.dialTimeout)
	c, err := dial(dctx, p.addr, p.dialTimeout)
	cancel()
	if err != nil {
		return 0, fmt.Errorf("advance ids: %w", err)
	}
	defer c.close()
	a := advancer{c: c, ctx: ctx, timeout: p.cmdTimeout}

	if err := a.begin(); err != nil {
		return 0, err
	}
	c.cmdTube("use", tube)
	if _, err := c.roundTrip("use", "USING"); err != nil {
		return 0, a.fail(err)
	}
	var last uint64
	n := 1 // the first batch learns where the counter is
	for {
		ids, err := a.putBatch(n)
		if len(ids) > 0 {
			last = ids[len(ids)-1]
		}
		if derr := a.deleteBatch(ids); err == nil {
			err = derr
		}
		if err != nil {
			return last, err
		}
		if last > past {
			return last, nil
		}
		n = int(min(past-last+1, advanceBatch))
	}
}

type advancer struct {
	c       *client
	ctx     context.Context
	timeout time.Duration
}

// begin sets the deadline for the next batch.
func (a *advancer) begin() error {
	if err := a.c.deadline(a.ctx, a.timeout); err != nil {
		return a.fail(err)
	}
	return nil
}

// fail names err; an error that is not beanstalkd's answer is the
// connection's.
func (a *advancer) fail(err error) error {
	if a.ctx.Err() != nil {
		return fmt.Errorf("advance ids: %w", a.ctx.Err())
	}
	_, err = classify("advance ids", err)
	return err
}

// putBatch puts n throwaway jobs and returns the ids it was given, also
// when it fails part way, so the caller can delete them.
func (a *advancer) putBatch(n int) ([]uint64, error) {
	if err := a.begin(); err != nil {
		return nil, err
	}
	throwaway := PutOptions{Priority: MaxPriority, Delay: time.Hour, TTR: time.Second}
	for range n {
		a.c.put([]byte("x"), throwaway)
	}
	if err := a.c.w.Flush(); err != nil {
		return nil, a.fail(err)
	}
	ids := make([]uint64, 0, n)
	var refused error
	for range n {
		id, err := a.c.putAnswer()
		if errors.Is(err, errBuried) {
			err = nil // a job all the same: its id is taken, and it must go
		}
		if keepsConn(err) {
			refused = cmp.Or(refused, err)
			continue
		}
		if err != nil {
			return ids, a.fail(err)
		}
		ids = append(ids, id)
	}
	if refused != nil {
		return ids, a.fail(refused)
	}
	return ids, nil
}

func (a *advancer) deleteBatch(ids []uint64) error {
	if len(ids) == 0 {
		return nil
	}
	if err := a.begin(); err != nil {
		return err
	}
	for _, id := range ids {
		a.c.cmd("delete", id)
	}
	if err := a.c.w.Flush(); err != nil {
		return a.fail(err)
	}
	for range ids {
		if _, err := a.c.expect("delete", "DELETED"); err != nil && !errors.Is(err, ErrNotFound) {
			return a.fail(err)
		}
	}
	return nil
}

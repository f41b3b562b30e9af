package queue

import (
	"bufio"
	"context"
	"fmt"
	"strconv"
	"strings"
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
	a := advancer{c: c, ctx: ctx, timeout: p.cmdTimeout, r: bufio.NewReader(c.nc), w: bufio.NewWriter(c.nc)}

	if err := a.begin(); err != nil {
		return 0, err
	}
	fmt.Fprintf(a.w, "use %s\r\n", tube)
	if err := a.expect("USING " + tube); err != nil {
		return 0, err
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
	c       *conn
	ctx     context.Context
	timeout time.Duration
	r       *bufio.Reader
	w       *bufio.Writer
}

// begin sets the deadline for the next batch.
func (a *advancer) begin() error {
	if err := a.ctx.Err(); err != nil {
		return fmt.Errorf("advance ids: %w", err)
	}
	deadline := time.Now().Add(a.timeout)
	if d, ok := a.ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = a.c.nc.SetDeadline(deadline)
	return nil
}

func (a *advancer) line() (string, error) {
	s, err := a.r.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("advance ids: %w: %w", ErrUnavailable, err)
	}
	return strings.TrimRight(s, "\r\n"), nil
}

func (a *advancer) expect(want string) error {
	if err := a.w.Flush(); err != nil {
		return fmt.Errorf("advance ids: %w: %w", ErrUnavailable, err)
	}
	got, err := a.line()
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("advance ids: beanstalkd answered %q, want %q", got, want)
	}
	return nil
}

// putBatch puts n throwaway jobs and returns the ids it was given, also
// when it fails part way, so the caller can delete them.
func (a *advancer) putBatch(n int) ([]uint64, error) {
	if err := a.begin(); err != nil {
		return nil, err
	}
	for range n {
		a.w.WriteString("put 4294967295 3600 1 1\r\nx\r\n")
	}
	if err := a.w.Flush(); err != nil {
		return nil, fmt.Errorf("advance ids: %w: %w", ErrUnavailable, err)
	}
	ids := make([]uint64, 0, n)
	var firstErr error
	for range n {
		s, err := a.line()
		if err != nil {
			return ids, err
		}
		word, rest, _ := strings.Cut(s, " ")
		if word != "INSERTED" && word != "BURIED" {
			if firstErr == nil {
				firstErr = fmt.Errorf("advance ids: put answered %q", s)
			}
			continue
		}
		id, err := strconv.ParseUint(rest, 10, 64)
		if err != nil {
			return ids, fmt.Errorf("advance ids: put answered %q", s)
		}
		ids = append(ids, id)
	}
	return ids, firstErr
}

func (a *advancer) deleteBatch(ids []uint64) error {
	if len(ids) == 0 {
		return nil
	}
	if err := a.begin(); err != nil {
		return err
	}
	for _, id := range ids {
		fmt.Fprintf(a.w, "delete %d\r\n", id)
	}
	if err := a.w.Flush(); err != nil {
		return fmt.Errorf("advance ids: %w: %w", ErrUnavailable, err)
	}
	for range ids {
		s, err := a.line()
		if err != nil {
			return err
		}
		if s != "DELETED" && s != "NOT_FOUND" {
			return fmt.Errorf("advance ids: delete answered %q", s)
		}
	}
	return nil
}

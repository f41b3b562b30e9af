package queue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/beanstalkd/go-beanstalk"
)

// Reserved is a job handed to a consumer. Finish it with the same
// Consumer's Delete, Release or Bury: beanstalkd ties a reservation to its
// connection.
type Reserved struct {
	ID   uint64
	Body []byte
	// Tube, Reserves and TTR come from stats-job right after the reserve.
	Tube     string
	Reserves uint64
	Priority uint32
	TTR      time.Duration
}

// Consumer owns one connection that watches a set of tubes. It is not safe
// for concurrent use: a blocked reserve stalls every other command on its
// connection, so each reserver has its own Consumer.
type Consumer struct {
	addr    string
	tubes   []string
	timeout time.Duration
	c       *conn
	ts      *beanstalk.TubeSet
}

// NewConsumer returns a consumer of tubes on the beanstalkd at addr. It
// dials on first use and again after a failure.
func NewConsumer(addr string, tubes []string, timeout time.Duration) *Consumer {
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	return &Consumer{addr: addr, tubes: tubes, timeout: timeout}
}

// Close closes the connection; beanstalkd then releases what it had
// reserved.
func (c *Consumer) Close() error {
	if c.c != nil {
		c.c.close()
		c.c = nil
	}
	return nil
}

func (c *Consumer) run(ctx context.Context, op string, extra time.Duration, f func() error) error {
	if c.c == nil {
		dctx, cancel := context.WithTimeout(ctx, c.timeout)
		cn, err := dial(dctx, c.addr, c.timeout)
		cancel()
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		c.c = cn
		c.ts = beanstalk.NewTubeSet(cn.bc, c.tubes...)
	}
	ok, err := c.c.do(ctx, c.timeout+extra, op, f)
	if !ok {
		c.Close()
	}
	return err
}

// ErrNoJob is returned by Reserve when no job came within its wait.
var ErrNoJob = errors.New("no job ready")

// Reserve waits up to wait for a job from the watched tubes. It returns
// ErrNoJob when none came, so callers can check their context between
// waits.
func (c *Consumer) Reserve(ctx context.Context, wait time.Duration) (Reserved, error) {
	var r Reserved
	err := c.run(ctx, "reserve", wait, func() error {
		var err error
		r.ID, r.Body, err = c.ts.Reserve(wait)
		return err
	})
	if errors.Is(err, beanstalk.ErrTimeout) || errors.Is(err, beanstalk.ErrDeadline) {
		return r, ErrNoJob
	}
	if err != nil {
		return r, err
	}
	var m map[string]string
	err = c.run(ctx, "stats-job", 0, func() error {
		var err error
		m, err = c.c.bc.StatsJob(r.ID)
		return err
	})
	if err != nil {
		// The reservation is tied to this connection; a failed stats-job
		// leaves it usable, and the job's own fields are enough to work.
		return r, fmt.Errorf("stats-job %d after reserve: %w", r.ID, err)
	}
	s, err := parseJobStats(m)
	if err != nil {
		return r, err
	}
	r.Tube, r.Reserves, r.Priority, r.TTR = s.Tube, s.Reserves, s.Pri, time.Duration(s.TTR)*time.Second
	return r, nil
}

// Delete removes a job this consumer reserved.
func (c *Consumer) Delete(ctx context.Context, id uint64) error {
	return c.run(ctx, "delete", 0, func() error { return c.c.bc.Delete(id) })
}

// Release puts a reserved job back, ready after delay.
func (c *Consumer) Release(ctx context.Context, id uint64, pri uint32, delay time.Duration) error {
	return c.run(ctx, "release", 0, func() error { return c.c.bc.Release(id, pri, delay) })
}

// Bury sets a reserved job aside until someone kicks it.
func (c *Consumer) Bury(ctx context.Context, id uint64, pri uint32) error {
	return c.run(ctx, "bury", 0, func() error { return c.c.bc.Bury(id, pri) })
}

// Touch asks for more time on a reserved job: its TTR starts again.
func (c *Consumer) Touch(ctx context.Context, id uint64) error {
	return c.run(ctx, "touch", 0, func() error { return c.c.bc.Touch(id) })
}

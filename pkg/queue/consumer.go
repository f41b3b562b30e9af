package queue

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
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

	// Releases, Buries and Timeouts, also from stats-job, count the
	// earlier deliveries that a reserver ended (Reserves also counts
	// reserves lost with their connection, which nobody ran).
	Releases, Buries, Timeouts uint64
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
	wrote   *writeSignal
}

// writeSignal is the consumer's connection as go-beanstalk writes to it:
// it tells DeleteAndReserve when the delete has gone out, so that the
// reserve is written behind it without waiting for its answer.
type writeSignal struct {
	net.Conn
	next atomic.Pointer[chan struct{}]
}

func (w *writeSignal) Write(b []byte) (int, error) {
	n, err := w.Conn.Write(b)
	if ch := w.next.Swap(nil); ch != nil {
		close(*ch)
	}
	return n, err
}

// NewConsumer returns a consumer of tubes on the beanstalkd at addr. It
// dials on first use and again after a failure.
func NewConsumer(addr string, tubes []string, timeout time.Duration) *Consumer {
	return &Consumer{addr: addr, tubes: tubes, timeout: cmp.Or(max(timeout, 0), 2*time.Second)}
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

// run runs f on the consumer's connection, dialing first when it has
// none, under the command timeout plus extra.
func (c *Consumer) run(ctx context.Context, op string, extra time.Duration, f func(bc *beanstalk.Conn) error) error {
	if c.c == nil {
		cn, err := dial(ctx, c.addr, c.timeout)
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		c.wrote = &writeSignal{Conn: cn.nc}
		cn.bc = beanstalk.NewConn(c.wrote)
		// The tube set's watch and ignore go out with the first reserve.
		c.c, c.ts = cn, beanstalk.NewTubeSet(cn.bc, c.tubes...)
	}
	ok, err := c.c.call(ctx, c.timeout+extra, op, f)
	if !ok {
		c.Close()
	}
	return err
}

// with runs f as run does, under the command timeout.
func (c *Consumer) with(ctx context.Context, op string, f func(bc *beanstalk.Conn) error) error {
	return c.run(ctx, op, 0, f)
}

// ErrNoJob is returned by Reserve when no job came within its wait.
var ErrNoJob = errors.New("no job ready")

// Reserve waits up to wait for a job from the watched tubes. It returns
// ErrNoJob when none came, so callers can check their context between
// waits.
func (c *Consumer) Reserve(ctx context.Context, wait time.Duration) (Reserved, error) {
	var r Reserved
	err := c.run(ctx, "reserve", wait, func(*beanstalk.Conn) (err error) {
		r.ID, r.Body, err = c.ts.Reserve(wait)
		return err
	})
	return c.reserved(ctx, r, err)
}

// reserved ends a reserve: ErrNoJob, the reserve's error, or the job
// with its stats-job fields.
func (c *Consumer) reserved(ctx context.Context, r Reserved, err error) (Reserved, error) {
	if errors.Is(err, ErrNoJob) {
		return r, ErrNoJob
	}
	if err != nil {
		return r, err
	}
	return c.withStats(ctx, r)
}

// withStats adds the stats-job fields to a job just reserved.
func (c *Consumer) withStats(ctx context.Context, r Reserved) (Reserved, error) {
	m, err := ask(ctx, c.with, "stats-job", func(bc *beanstalk.Conn) (map[string]string, error) { return bc.StatsJob(r.ID) })
	s, serr := jobStats(m)
	if err = errors.Join(err, serr); err != nil {
		// The reservation is tied to this connection; a failed stats-job
		// leaves it usable, and the job's own fields are enough to work.
		return r, fmt.Errorf("stats-job %d after reserve: %w", r.ID, err)
	}
	r.Tube, r.Reserves, r.Priority, r.TTR = s.Tube, s.Reserves, s.Pri, time.Duration(s.TTR)*time.Second
	r.Releases, r.Buries, r.Timeouts = s.Releases, s.Buries, s.Timeouts
	return r, nil
}

// DeleteAndReserve deletes job id, which this consumer reserved, and
// reserves the next job, as Reserve does, with the reserve written right
// behind the delete (go-beanstalk pipelines concurrent calls on one
// connection): one round trip fewer per job than Delete and then
// Reserve. deleted is called once, from another goroutine, with the
// delete's outcome (nil, or the error Delete would return) as soon as it
// is known, and before DeleteAndReserve returns. When ctx is already done
// the delete is still made, alone.
func (c *Consumer) DeleteAndReserve(ctx context.Context, id uint64, wait time.Duration, deleted func(error)) (Reserved, error) {
	if err := ctx.Err(); err != nil || c.c == nil {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.timeout)
		deleted(c.Delete(dctx, id))
		cancel()
		if err != nil {
			return Reserved{}, fmt.Errorf("reserve: %w", err)
		}
		return c.Reserve(ctx, wait)
	}
	var r Reserved
	done := make(chan struct{})
	err := c.run(ctx, "reserve", wait, func(bc *beanstalk.Conn) (err error) {
		out := make(chan struct{})
		c.wrote.next.Store(&out)
		go func() {
			defer close(done)
			err := bc.Delete(id)
			if err != nil {
				_, err = classify("delete", err)
			}
			deleted(err)
		}()
		select {
		case <-out:
		case <-done: // failed before it was written
			c.wrote.next.Store(nil)
		}
		r.ID, r.Body, err = c.ts.Reserve(wait)
		<-done
		return err
	})
	select {
	case <-done:
	default: // run failed before the delete was sent
		deleted(fmt.Errorf("delete: %w", err))
	}
	return c.reserved(ctx, r, err)
}

// Delete removes a job this consumer reserved.
func (c *Consumer) Delete(ctx context.Context, id uint64) error {
	return c.with(ctx, "delete", func(bc *beanstalk.Conn) error { return bc.Delete(id) })
}

// Release puts a reserved job back, ready after delay.
func (c *Consumer) Release(ctx context.Context, id uint64, pri uint32, delay time.Duration) error {
	return c.with(ctx, "release", func(bc *beanstalk.Conn) error { return bc.Release(id, pri, max(delay, 0)) })
}

// Bury sets a reserved job aside until someone kicks it.
func (c *Consumer) Bury(ctx context.Context, id uint64, pri uint32) error {
	return c.with(ctx, "bury", func(bc *beanstalk.Conn) error { return bc.Bury(id, pri) })
}

// Touch asks for more time on a reserved job: its TTR starts again.
func (c *Consumer) Touch(ctx context.Context, id uint64) error {
	return c.with(ctx, "touch", func(bc *beanstalk.Conn) error { return bc.Touch(id) })
}

package queue

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jobsys/jobs/pkg/job"
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
	c       *client
	// watching is set once the connection watches the tubes (and ignores
	// default when it is not one of them).
	watching bool
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
		c.c, c.watching = cn, false
	}
	ok, err := c.c.do(ctx, c.timeout+extra, op, f)
	if !ok {
		c.Close()
	}
	return err
}

// maxBody bounds a reserved job's body: beanstalkd caps its
// max-job-size (-z) at 1 GiB.
const maxBody = 1 << 30

// ErrNoJob is returned by Reserve when no job came within its wait.
var ErrNoJob = errors.New("no job ready")

// Reserve waits up to wait for a job from the watched tubes. It returns
// ErrNoJob when none came, so callers can check their context between
// waits.
func (c *Consumer) Reserve(ctx context.Context, wait time.Duration) (Reserved, error) {
	return c.reserve(ctx, wait, 0, nil)
}

// DeleteAndReserve deletes job id, which this consumer reserved, and
// reserves the next job, as Reserve does, writing both commands at once:
// one round trip fewer per job than Delete and then Reserve. deleted is
// called once with the delete's outcome (nil, or the error Delete would
// return) as soon as it is known, before the wait for the next job.
// When ctx is already done the delete is still made, alone.
func (c *Consumer) DeleteAndReserve(ctx context.Context, id uint64, wait time.Duration, deleted func(error)) (Reserved, error) {
	if err := ctx.Err(); err != nil {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.timeout)
		deleted(c.Delete(dctx, id))
		cancel()
		return Reserved{}, fmt.Errorf("reserve: %w", err)
	}
	reported := false
	r, err := c.reserve(ctx, wait, id, func(err error) { reported = true; deleted(err) })
	if !reported {
		// The connection failed (or could not be made) before the
		// delete's answer: whether it happened is unknown. If it did
		// not, the job comes back after the connection closes.
		deleted(fmt.Errorf("delete: %w", err))
	}
	return r, err
}

// reserve reserves a job, after deleting del first when it is not 0. A
// fresh connection first watches the tubes.
func (c *Consumer) reserve(ctx context.Context, wait time.Duration, del uint64, deleted func(error)) (Reserved, error) {
	var r Reserved
	err := c.run(ctx, "reserve", wait, func() error {
		cn := c.c
		watches := 0 // watch and ignore commands written
		if !c.watching {
			for _, t := range c.tubes {
				cn.cmdTube("watch", t)
				watches++
			}
			if !slices.Contains(c.tubes, DefaultTube) {
				cn.cmdTube("ignore", DefaultTube)
				watches++
			}
		}
		if del != 0 {
			cn.cmd("delete", del)
		}
		cn.cmd("reserve-with-timeout", seconds(wait))
		if err := cn.w.Flush(); err != nil {
			return err
		}
		// NOT_IGNORED (default was the only tube watched) cannot be: the
		// tubes are watched first.
		for range watches {
			if _, err := cn.expect("watch", "WATCHING"); err != nil {
				return unread(err)
			}
		}
		c.watching = true
		if del != 0 {
			_, err := cn.expect("delete", "DELETED")
			if err != nil && !keepsConn(err) {
				return err
			}
			if err != nil {
				err = fmt.Errorf("delete: %w", err)
			}
			deleted(err)
		}
		rest, err := cn.expect("reserve", "RESERVED")
		if err != nil {
			return err
		}
		id, n, _ := strings.Cut(rest, " ")
		r.ID, err = strconv.ParseUint(id, 10, 64)
		size, nerr := strconv.ParseUint(n, 10, 64)
		if err != nil || nerr != nil || size > maxBody {
			return fmt.Errorf("%w: reserve answered RESERVED %s", errOutOfStep, rest)
		}
		r.Body, err = cn.data(size, "reserve")
		return err
	})
	if errors.Is(err, errTimedOut) || errors.Is(err, errDeadlineSoon) {
		return r, ErrNoJob
	}
	if err != nil {
		return r, err
	}
	var s job.Stats
	err = c.run(ctx, "stats-job", 0, func() error {
		var err error
		s, err = c.c.statsJob(r.ID)
		return err
	})
	if err != nil {
		// The reservation is tied to this connection; a failed stats-job
		// leaves it usable, and the job's own fields are enough to work.
		return r, fmt.Errorf("stats-job %d after reserve: %w", r.ID, err)
	}
	r.Tube, r.Reserves, r.Priority, r.TTR = s.Tube, s.Reserves, s.Pri, time.Duration(s.TTR)*time.Second
	r.Releases, r.Buries, r.Timeouts = s.Releases, s.Buries, s.Timeouts
	return r, nil
}

// Delete removes a job this consumer reserved.
func (c *Consumer) Delete(ctx context.Context, id uint64) error {
	return c.run(ctx, "delete", 0, func() error { return c.c.simple("delete", id, "DELETED") })
}

// Release puts a reserved job back, ready after delay.
func (c *Consumer) Release(ctx context.Context, id uint64, pri uint32, delay time.Duration) error {
	return c.run(ctx, "release", 0, func() error {
		c.c.cmd("release", id, uint64(pri), seconds(delay))
		_, err := c.c.roundTrip("release", "RELEASED")
		return err
	})
}

// Bury sets a reserved job aside until someone kicks it.
func (c *Consumer) Bury(ctx context.Context, id uint64, pri uint32) error {
	return c.run(ctx, "bury", 0, func() error {
		c.c.cmd("bury", id, uint64(pri))
		_, err := c.c.roundTrip("bury", "BURIED")
		return err
	})
}

// Touch asks for more time on a reserved job: its TTR starts again.
func (c *Consumer) Touch(ctx context.Context, id uint64) error {
	return c.run(ctx, "touch", 0, func() error { return c.c.simple("touch", id, "TOUCHED") })
}

package queue

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/beanstalkd/go-beanstalk"
)

// Admin runs beanstalkd's operations commands (list-tubes, stats-tube,
// pause-tube, kick, kick-job, peek, delete) through go-beanstalk. They
// are rare (an operator's click, a board opening a list), so each call
// dials a connection of its own under the call's deadline and closes it
// after: nothing is shared with the Pool, and a hung beanstalkd costs one
// call its timeout, never a stuck connection.
type Admin struct {
	addr    string
	timeout time.Duration
}

// NewAdmin returns an Admin for the beanstalkd at addr; timeout bounds
// each call (dial included) when the context has no earlier deadline.
func NewAdmin(addr string, timeout time.Duration) *Admin {
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	return &Admin{addr: addr, timeout: timeout}
}

// TubeInfo is beanstalkd's stats-tube answer with its keys in camelCase,
// as GET /N/ names stats-job's.
type TubeInfo struct {
	Name                string `json:"name"`
	CurrentJobsUrgent   uint64 `json:"currentJobsUrgent"`
	CurrentJobsReady    uint64 `json:"currentJobsReady"`
	CurrentJobsReserved uint64 `json:"currentJobsReserved"`
	CurrentJobsDelayed  uint64 `json:"currentJobsDelayed"`
	CurrentJobsBuried   uint64 `json:"currentJobsBuried"`
	TotalJobs           uint64 `json:"totalJobs"`
	CurrentUsing        uint64 `json:"currentUsing"`
	CurrentWatching     uint64 `json:"currentWatching"`
	CurrentWaiting      uint64 `json:"currentWaiting"`
	CmdDelete           uint64 `json:"cmdDelete"`
	CmdPauseTube        uint64 `json:"cmdPauseTube"`
	// Pause is the length of the current pause in seconds (0: not paused);
	// PauseTimeLeft is what remains of it.
	Pause         uint64 `json:"pause"`
	PauseTimeLeft uint64 `json:"pauseTimeLeft"`
}

// Peeked is a job copied by a peek command: its id and body.
type Peeked struct {
	ID   uint64
	Body []byte
}

// do runs f on a fresh connection whose every read and write ends at the
// call's deadline.
func (a *Admin) do(ctx context.Context, op string, f func(*beanstalk.Conn) error) error {
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", a.addr)
	if err != nil {
		return fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err)
	}
	deadline, _ := ctx.Deadline()
	if err := nc.SetDeadline(deadline); err != nil {
		_ = nc.Close()
		return fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err)
	}
	// A cancelled context interrupts a call in flight, as a deadline does.
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	c := beanstalk.NewConn(nc)
	defer c.Close()
	return adminError(op, f(c))
}

// adminError maps go-beanstalk's errors onto the package's own.
func adminError(op string, err error) error {
	var ne beanstalk.NameError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, beanstalk.ErrNotFound):
		return fmt.Errorf("%s: %w", op, ErrNotFound)
	case errors.As(err, &ne):
		return fmt.Errorf("%s: %w: %w", op, ErrBadTube, err)
	case errors.Is(err, beanstalk.ErrDraining):
		return fmt.Errorf("%s: %w", op, ErrDraining)
	}
	var ce beanstalk.ConnError
	if errors.As(err, &ce) && !isNetError(ce.Err) {
		return fmt.Errorf("%s: %w", op, err) // an answer beanstalkd gave
	}
	return fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err)
}

func isNetError(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, net.ErrClosed)
}

// Ping checks that beanstalkd answers.
func (a *Admin) Ping(ctx context.Context) error {
	return a.do(ctx, "stats", func(c *beanstalk.Conn) error {
		_, err := c.Stats()
		return err
	})
}

// Tubes returns the names of the tubes beanstalkd has, sorted.
func (a *Admin) Tubes(ctx context.Context) ([]string, error) {
	var names []string
	err := a.do(ctx, "list-tubes", func(c *beanstalk.Conn) error {
		var err error
		names, err = c.ListTubes()
		return err
	})
	slices.Sort(names)
	return names, err
}

// TubeStats returns the stats-tube of each named tube, in the order
// given, on one connection; a tube that does not exist (any more) is
// left out.
func (a *Admin) TubeStats(ctx context.Context, names []string) ([]TubeInfo, error) {
	out := make([]TubeInfo, 0, len(names))
	err := a.do(ctx, "stats-tube", func(c *beanstalk.Conn) error {
		for _, name := range names {
			m, err := beanstalk.NewTube(c, name).Stats()
			if errors.Is(err, beanstalk.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			out = append(out, tubeInfoOf(m))
		}
		return nil
	})
	return out, err
}

// Tube returns the named tube's stats-tube; ErrNotFound when beanstalkd
// has no such tube (it has one while a job or a client uses it).
func (a *Admin) Tube(ctx context.Context, name string) (TubeInfo, error) {
	if err := ValidateTube(name); err != nil {
		return TubeInfo{}, err
	}
	var info TubeInfo
	err := a.do(ctx, "stats-tube", func(c *beanstalk.Conn) error {
		m, err := beanstalk.NewTube(c, name).Stats()
		info = tubeInfoOf(m)
		return err
	})
	return info, err
}

// adminUint reads a stats number; a missing or odd one is 0.
func adminUint(s string) uint64 {
	n, _ := strconv.ParseUint(s, 10, 64)
	return n
}

func tubeInfoOf(m map[string]string) TubeInfo {
	return TubeInfo{
		Name:                m["name"],
		CurrentJobsUrgent:   adminUint(m["current-jobs-urgent"]),
		CurrentJobsReady:    adminUint(m["current-jobs-ready"]),
		CurrentJobsReserved: adminUint(m["current-jobs-reserved"]),
		CurrentJobsDelayed:  adminUint(m["current-jobs-delayed"]),
		CurrentJobsBuried:   adminUint(m["current-jobs-buried"]),
		TotalJobs:           adminUint(m["total-jobs"]),
		CurrentUsing:        adminUint(m["current-using"]),
		CurrentWatching:     adminUint(m["current-watching"]),
		CurrentWaiting:      adminUint(m["current-waiting"]),
		CmdDelete:           adminUint(m["cmd-delete"]),
		CmdPauseTube:        adminUint(m["cmd-pause-tube"]),
		Pause:               adminUint(m["pause"]),
		PauseTimeLeft:       adminUint(m["pause-time-left"]),
	}
}

// MaxPause is the longest pause PauseTube takes: beanstalkd keeps the
// delay in nanoseconds, and a day is more than any operator means.
const MaxPause = 7 * 24 * time.Hour

// PauseTube stops reservations from tube for d (whole seconds); 0
// resumes it at once.
func (a *Admin) PauseTube(ctx context.Context, tube string, d time.Duration) error {
	if err := ValidateTube(tube); err != nil {
		return err
	}
	if d < 0 || d > MaxPause {
		return fmt.Errorf("pause %s: must be from 0 to %s", d, MaxPause)
	}
	return a.do(ctx, "pause-tube", func(c *beanstalk.Conn) error {
		return beanstalk.NewTube(c, tube).Pause(d)
	})
}

// Kick moves up to bound jobs of tube to ready: buried ones when it has
// any, else delayed ones (beanstalkd's kick). It returns how many moved.
func (a *Admin) Kick(ctx context.Context, tube string, bound int) (int, error) {
	if err := ValidateTube(tube); err != nil {
		return 0, err
	}
	var n int
	err := a.do(ctx, "kick", func(c *beanstalk.Conn) error {
		var err error
		n, err = beanstalk.NewTube(c, tube).Kick(bound)
		return err
	})
	return n, err
}

// KickJob moves one buried or delayed job to ready.
func (a *Admin) KickJob(ctx context.Context, id uint64) error {
	return a.do(ctx, "kick-job "+strconv.FormatUint(id, 10), func(c *beanstalk.Conn) error {
		return c.KickJob(id)
	})
}

// Delete removes a job that no client has reserved.
func (a *Admin) Delete(ctx context.Context, id uint64) error {
	return a.do(ctx, "delete "+strconv.FormatUint(id, 10), func(c *beanstalk.Conn) error {
		return c.Delete(id)
	})
}

// Peek copies job id; ErrNotFound when beanstalkd does not hold it.
func (a *Admin) Peek(ctx context.Context, id uint64) ([]byte, error) {
	var body []byte
	err := a.do(ctx, "peek "+strconv.FormatUint(id, 10), func(c *beanstalk.Conn) error {
		var err error
		body, err = c.Peek(id)
		return err
	})
	return body, err
}

// PeekNext copies the next job of tube in state "ready" (peek-ready: the
// one a worker gets next), "delayed" (peek-delayed: the next to become
// ready) or "buried" (peek-buried: the next a kick moves); ErrNotFound
// when there is none.
func (a *Admin) PeekNext(ctx context.Context, tube, state string) (Peeked, error) {
	if err := ValidateTube(tube); err != nil {
		return Peeked{}, err
	}
	var p Peeked
	err := a.do(ctx, "peek-"+state, func(c *beanstalk.Conn) error {
		t := beanstalk.NewTube(c, tube)
		var err error
		switch state {
		case "ready":
			p.ID, p.Body, err = t.PeekReady()
		case "delayed":
			p.ID, p.Body, err = t.PeekDelayed()
		case "buried":
			p.ID, p.Body, err = t.PeekBuried()
		default:
			return fmt.Errorf("no peek for state %q", state)
		}
		return err
	})
	return p, err
}

// Package queue is the beanstalkd adapter: a pool of connections for
// short commands (put, stats-job, kick, delete) and single-connection
// consumers for reserving and finishing jobs.
//
// Every command runs under a deadline taken from its context and the
// pool's command timeout, so an unreachable beanstalkd makes calls fail
// fast instead of hanging; a connection that fails is dropped and the next
// call dials again, so the pool reconnects by itself.
//
// Every connection speaks beanstalkd's protocol through one client of
// this package's own (client.go), which can write many commands before it
// reads their answers: the pool pipelines concurrent puts and stats-jobs
// (pipeline.go), a consumer writes a delete with the next reserve, and
// Advance writes its throwaway jobs in batches.
package queue

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jobsys/jobs/pkg/job"
)

// Errors the callers match with errors.Is.
var (
	// ErrNotFound: beanstalkd does not know the job (or, for delete,
	// release, bury and touch, this connection has not reserved it).
	ErrNotFound = errors.New("job not found in queue")
	// ErrUnavailable: beanstalkd could not be reached or did not answer in
	// time.
	ErrUnavailable = errors.New("queue unavailable")
	// ErrJobTooBig: the body is over beanstalkd's max-job-size.
	ErrJobTooBig = errors.New("job body larger than the queue's max-job-size")
	// ErrDraining: beanstalkd is draining and takes no new jobs.
	ErrDraining = errors.New("queue is draining")
	// ErrBadTube: the tube name is not one beanstalkd accepts.
	ErrBadTube = errors.New("bad tube name")
)

// MaxPriority is the largest (least urgent) beanstalkd priority.
const MaxPriority = 1<<32 - 1

// DefaultTube is the tube jobs go to when none is named.
const DefaultTube = "default"

// ValidateTube checks name against beanstalkd's rules: 1 to 200 bytes of
// letters, digits and -+/;.$_(), not starting with a hyphen.
func ValidateTube(name string) error {
	if name == "" || len(name) > 200 {
		return fmt.Errorf("%w %q: must be 1 to 200 characters", ErrBadTube, name)
	}
	if name[0] == '-' {
		return fmt.Errorf("%w %q: must not start with a hyphen", ErrBadTube, name)
	}
	for _, c := range []byte(name) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-+/;.$_()", c) >= 0
		if !ok {
			return fmt.Errorf("%w %q: only letters, digits and -+/;.$_() are allowed", ErrBadTube, name)
		}
	}
	return nil
}

// Pool is a set of connections for short commands, safe for concurrent
// use. It dials lazily and drops connections that fail; when one fails
// with ErrUnavailable it drops the idle ones too: after beanstalkd
// restarts they all point at the dead process, and each would fail one
// call.
type Pool struct {
	addr        string
	dialTimeout time.Duration
	cmdTimeout  time.Duration
	idle        chan *client
	onConnect   atomic.Pointer[OnConnect]
	pipeline    *pipeline
}

// OnConnect is called with the server's stats each time the pool dials a
// new connection, before the connection is used: a caller can tell from
// the stats' "id" and "pid" that beanstalkd restarted. An error fails the
// call that dialed.
type OnConnect func(ctx context.Context, stats map[string]string) error

// PoolConfig configures a Pool.
type PoolConfig struct {
	Addr string
	// MaxIdle is how many connections are kept between calls (default 64).
	MaxIdle int
	// Timeout bounds dialing and each command (default 2s).
	Timeout time.Duration
	// PutSenders is how many connections send puts at the same time
	// (default 2); concurrent puts beyond that are pipelined onto them.
	PutSenders int
}

// NewPool returns a pool for the beanstalkd at cfg.Addr. It does not dial.
func NewPool(cfg PoolConfig) *Pool {
	if cfg.MaxIdle <= 0 {
		cfg.MaxIdle = 64
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.PutSenders <= 0 {
		cfg.PutSenders = 2
	}
	return &Pool{addr: cfg.Addr, dialTimeout: cfg.Timeout, cmdTimeout: cfg.Timeout, idle: make(chan *client, cfg.MaxIdle),
		pipeline: newPipeline(cfg.PutSenders)}
}

// SetOnConnect makes f see every connection the pool dials from now on
// (nil: none). Connections dialed before are not shown to it, so a caller
// that must see the first one sets it before the pool's first use.
func (p *Pool) SetOnConnect(f OnConnect) {
	if f == nil {
		p.onConnect.Store(nil)
		return
	}
	p.onConnect.Store(&f)
}

// Addr is the address the pool dials.
func (p *Pool) Addr() string { return p.addr }

// Close closes the idle connections. Calls after Close dial again.
func (p *Pool) Close() error {
	for {
		select {
		case c := <-p.idle:
			c.close()
		default:
			return nil
		}
	}
}

// with runs f on an idle connection, or on a new one. A connection that
// fails is dropped, and with it every idle one.
func (p *Pool) with(ctx context.Context, op string, f func(c *client) error) error {
	err := p.withConn(ctx, op, f)
	if errors.Is(err, ErrUnavailable) {
		_ = p.Close()
	}
	return err
}

func (p *Pool) withConn(ctx context.Context, op string, f func(c *client) error) error {
	var c *client
	select {
	case c = <-p.idle:
	default:
		dctx, cancel := context.WithTimeout(ctx, p.dialTimeout)
		var err error
		c, err = dial(dctx, p.addr, p.dialTimeout)
		cancel()
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		if hook := p.onConnect.Load(); hook != nil {
			if err := p.connected(ctx, c, *hook); err != nil {
				return fmt.Errorf("%s: %w", op, err)
			}
		}
	}
	ok, err := c.do(ctx, p.cmdTimeout, op, func() error { return f(c) })
	if !ok {
		c.close()
		return err
	}
	select {
	case p.idle <- c:
	default:
		c.close()
	}
	return err
}

// connected runs the OnConnect hook for a new connection, closing the
// connection when it fails.
func (p *Pool) connected(ctx context.Context, c *client, hook OnConnect) error {
	var stats map[string]string
	ok, err := c.do(ctx, p.cmdTimeout, "stats", func() error {
		var err error
		stats, err = c.serverStats()
		return err
	})
	if err == nil {
		err = hook(ctx, stats)
	}
	if err != nil || !ok {
		c.close()
	}
	return err
}

// PutOptions are the beanstalkd put parameters.
type PutOptions struct {
	Tube     string
	Priority uint32
	Delay    time.Duration
	TTR      time.Duration
}

// Put adds body to the tube and returns the new job's id. Concurrent puts
// share connections: see pipeline.
func (p *Pool) Put(ctx context.Context, body []byte, o PutOptions) (uint64, error) {
	tube := o.Tube
	if tube == "" {
		tube = DefaultTube
	}
	if err := ValidateTube(tube); err != nil {
		return 0, fmt.Errorf("put: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("put: %w", err)
	}
	res := p.pipelined(ctx, &pipeReq{tube: tube, body: body, o: o, done: make(chan pipeRes, 1)})
	return res.id, res.err
}

// StatsJob returns beanstalkd's statistics for job id, or ErrNotFound.
// Concurrent calls share connections with each other and with puts: see
// pipeline.
func (p *Pool) StatsJob(ctx context.Context, id uint64) (job.Stats, error) {
	if err := ctx.Err(); err != nil {
		return job.Stats{}, fmt.Errorf("stats-job: %w", err)
	}
	res := p.pipelined(ctx, &pipeReq{statsJob: true, id: id, done: make(chan pipeRes, 1)})
	return res.stats, res.err
}

// Delete removes a ready, delayed or buried job. A reserved job can be
// deleted only by the connection that reserved it: here it answers
// ErrNotFound, and callers check the state first to tell the two apart.
func (p *Pool) Delete(ctx context.Context, id uint64) error {
	return p.with(ctx, "delete", func(c *client) error { return c.simple("delete", id, "DELETED") })
}

// Kick moves a buried or delayed job to ready.
func (p *Pool) Kick(ctx context.Context, id uint64) error {
	return p.with(ctx, "kick-job", func(c *client) error { return c.simple("kick-job", id, "KICKED") })
}

// ServerStats returns beanstalkd's stats as strings, by name.
func (p *Pool) ServerStats(ctx context.Context) (map[string]string, error) {
	var m map[string]string
	err := p.with(ctx, "stats", func(c *client) error {
		var err error
		m, err = c.serverStats()
		return err
	})
	return m, err
}

// MaxJobSize returns the server's max-job-size in bytes.
func (p *Pool) MaxJobSize(ctx context.Context) (int, error) {
	m, err := p.ServerStats(ctx)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(m["max-job-size"])
	if err != nil {
		return 0, fmt.Errorf("stats: max-job-size %q: %w", m["max-job-size"], err)
	}
	return n, nil
}

// Tubes returns the statistics of every tube beanstalkd has.
func (p *Pool) Tubes(ctx context.Context) (map[string]job.TubeStats, error) {
	var out map[string]job.TubeStats
	err := p.with(ctx, "list-tubes", func(c *client) error {
		names, err := c.listTubes()
		if err != nil {
			return err
		}
		out, err = c.tubeStats(names)
		return err
	})
	return out, err
}

func atou(s string) uint64 {
	n, _ := strconv.ParseUint(s, 10, 64)
	return n
}

// Ping checks that beanstalkd answers.
func (p *Pool) Ping(ctx context.Context) error {
	_, err := p.ServerStats(ctx)
	return err
}

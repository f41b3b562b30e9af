// Package queue is the beanstalkd adapter: a pool of connections for
// short commands (put, stats-job, kick, delete, and the operations
// commands: list-tubes, stats-tube, pause-tube, peek) and
// single-connection consumers for reserving and finishing jobs.
//
// Every connection speaks beanstalkd's protocol through go-beanstalk
// (github.com/beanstalkd/go-beanstalk). Each command runs under a
// deadline set on the net.Conn handed to beanstalk.NewConn, taken from
// its context and the pool's command timeout, so an unreachable
// beanstalkd makes calls fail fast instead of hanging; a connection that
// fails is dropped and the next call dials again, so the pool reconnects
// by itself. go-beanstalk's errors are mapped to this package's
// sentinels, and still match go-beanstalk's own with errors.Is.
package queue

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/beanstalkd/go-beanstalk"

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
	// ErrServerFault: beanstalkd answered OUT_OF_MEMORY or INTERNAL_ERROR
	// (a full binlog disk, no memory left); the command was not done.
	ErrServerFault = errors.New("beanstalkd is out of memory or failed internally (is its binlog disk full?)")
	// ErrBuried: beanstalkd took a put but buried the job at once, out of
	// memory to grow its ready queue.
	ErrBuried = errors.New("beanstalkd buried the new job: out of memory")
)

// MaxPriority is the largest (least urgent) beanstalkd priority.
const MaxPriority = 1<<32 - 1

// DefaultTube is the tube jobs go to when none is named.
const DefaultTube = "default"

// ValidateTube checks name against beanstalkd's rules as go-beanstalk
// applies them: 1 to 199 bytes of letters, digits and -+/;.$_(), not
// starting with a hyphen.
func ValidateTube(name string) error {
	if name == "" || len(name) >= 200 {
		return fmt.Errorf("%w %q: must be 1 to 199 characters", ErrBadTube, name)
	}
	if name[0] == '-' {
		return fmt.Errorf("%w %q: must not start with a hyphen", ErrBadTube, name)
	}
	for _, c := range []byte(name) {
		if strings.IndexByte(beanstalk.NameChars, c) < 0 || c == '\\' {
			return fmt.Errorf("%w %q: only letters, digits and -+/;.$_() are allowed", ErrBadTube, name)
		}
	}
	return nil
}

// conn is a go-beanstalk connection and the net.Conn under it, whose
// deadline bounds each call.
type conn struct {
	nc net.Conn
	bc *beanstalk.Conn
	// process is the beanstalkd process the connection reached, from the
	// stats shown to OnConnect (see Process).
	process string
	raw     syscall.RawConn // for alive; nil when nc has none
}

// Process names the beanstalkd process a stats answer comes from: its
// random "id" and its "pid". A restarted beanstalkd is a new process.
func Process(stats map[string]string) string { return stats["id"] + "/" + stats["pid"] }

func dial(ctx context.Context, addr string, timeout time.Duration) (*conn, error) {
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	d := net.Dialer{KeepAlive: 10 * time.Second}
	nc, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%w: dial beanstalkd at %s: %w", ErrUnavailable, addr, err)
	}
	c := &conn{nc: nc, bc: beanstalk.NewConn(nc)}
	if sc, ok := nc.(syscall.Conn); ok {
		c.raw, _ = sc.SyscallConn()
	}
	return c, nil
}

func (c *conn) close() { _ = c.nc.Close() }

// call runs f under a deadline: timeout, or ctx's deadline when sooner;
// ctx ending during the call breaks it off. It names f's error with op
// and reports whether the connection can be kept.
func (c *conn) call(ctx context.Context, timeout time.Duration, op string, f func(*beanstalk.Conn) error) (bool, error) {
	if err := ctx.Err(); err != nil {
		return true, fmt.Errorf("%s: %w", op, err)
	}
	d := time.Now().Add(timeout)
	if cd, ok := ctx.Deadline(); ok && cd.Before(d) {
		d = cd
	}
	if err := c.nc.SetDeadline(d); err != nil {
		return false, fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.nc.SetDeadline(time.Unix(1, 0)) })
	err := f(c.bc)
	// When ctx ended during the call its deadline may still be set under
	// the next user: the connection goes.
	stopped := stop()
	if err == nil {
		return stopped, nil
	}
	ok, err := classify(op, err)
	return ok && stopped, err
}

// answers maps go-beanstalk's errors for beanstalkd's refusals, which
// fail one command and leave the connection usable, to this package's.
var answers = []struct{ theirs, ours error }{
	{beanstalk.ErrEmpty, ErrBadTube}, // a NameError, found before anything is written
	{beanstalk.ErrBadChar, ErrBadTube},
	{beanstalk.ErrTooLong, ErrBadTube},
	{beanstalk.ErrNotFound, ErrNotFound},
	{beanstalk.ErrJobTooBig, ErrJobTooBig},
	{beanstalk.ErrDraining, ErrDraining},
	{beanstalk.ErrOOM, ErrServerFault},
	{beanstalk.ErrInternal, ErrServerFault},
	{beanstalk.ErrTimeout, ErrNoJob},
	{beanstalk.ErrDeadline, ErrNoJob},
}

// classify names err with op and says whether the connection can be kept:
// beanstalkd's refusals leave it usable; I/O errors and answers go-beanstalk
// cannot read do not, and make the error ErrUnavailable.
func classify(op string, err error) (bool, error) {
	if _, ok := buriedID(err); ok {
		return true, fmt.Errorf("%s: %w: %w", op, ErrBuried, err)
	}
	for _, a := range answers {
		if errors.Is(err, a.theirs) {
			return true, fmt.Errorf("%s: %w: %w", op, a.ours, err)
		}
	}
	return false, fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err)
}

// buriedID reads the id of a put's "BURIED <id>" answer, which
// go-beanstalk reports only as an unknown response.
func buriedID(err error) (uint64, bool) {
	var ce beanstalk.ConnError
	if !errors.As(err, &ce) {
		return 0, false
	}
	s, ok := strings.CutPrefix(ce.Err.Error(), "unknown response: BURIED ")
	if !ok {
		return 0, false
	}
	id, perr := strconv.ParseUint(s, 10, 64)
	return id, perr == nil
}

// alive reports whether an idle connection is still open: a peek that
// finds the peer's FIN or RST, which a restarted beanstalkd leaves on
// every old connection, without blocking. go-beanstalk has no such check,
// and a command written to a dead connection might have to be retried.
func (c *conn) alive() bool {
	if c.raw == nil {
		return true
	}
	open := true
	var b [1]byte
	_ = c.raw.Read(func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		// Nothing to read (EAGAIN) is an open connection; end of stream
		// or an error is a closed one; an unasked byte is out of step.
		open = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
		return true
	})
	return open
}

// Pool is a set of connections for short commands, safe for concurrent
// use. It dials lazily and drops connections that fail; when one fails
// with ErrUnavailable it drops the idle ones too: after beanstalkd
// restarts they all point at the dead process. An idle connection found
// closed by the server is dropped before use, so a restart costs no call.
type Pool struct {
	addr      string
	timeout   time.Duration
	idle      chan *conn
	onConnect atomic.Pointer[OnConnect]
	// refused is when a put was last refused with ErrServerFault (unix
	// nanoseconds), 0 after a put went through.
	refused atomic.Int64
}

// faultFor is how long Ping reports a put refused with ErrServerFault
// when no put has gone through since.
const faultFor = 10 * time.Second

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
}

// NewPool returns a pool for the beanstalkd at cfg.Addr. It does not dial.
func NewPool(cfg PoolConfig) *Pool {
	return &Pool{addr: cfg.Addr, timeout: cmp.Or(max(cfg.Timeout, 0), 2*time.Second),
		idle: make(chan *conn, cmp.Or(max(cfg.MaxIdle, 0), 64))}
}

// SetOnConnect makes f see every connection the pool dials from now on
// (nil: none). Connections dialed before are not shown to it, so a caller
// that must see the first one sets it before the pool's first use.
func (p *Pool) SetOnConnect(f OnConnect) { p.onConnect.Store(&f) }

// Addr is the address the pool dials.
func (p *Pool) Addr() string { return p.addr }

// Close closes the idle connections. Calls after Close dial again.
func (p *Pool) Close() error {
	for c := p.idleConn(); c != nil; c = p.idleConn() {
		c.close()
	}
	return nil
}

// idleConn takes an idle connection, or returns nil when there is none.
func (p *Pool) idleConn() *conn {
	select {
	case c := <-p.idle:
		return c
	default:
		return nil
	}
}

// with runs f on an idle connection, or on a new one. A connection that
// fails is dropped, and with it every idle one.
func (p *Pool) with(ctx context.Context, op string, f func(c *beanstalk.Conn) error) error {
	c, err := p.get(ctx, op)
	if err != nil {
		return err
	}
	ok, err := c.call(ctx, p.timeout, op, f)
	p.put(c, ok)
	return err
}

// ask runs f through with (a Pool's or a Consumer's) and returns f's
// result.
func ask[T any](ctx context.Context, with func(context.Context, string, func(*beanstalk.Conn) error) error, op string, f func(bc *beanstalk.Conn) (T, error)) (T, error) {
	var v T
	err := with(ctx, op, func(bc *beanstalk.Conn) (err error) {
		v, err = f(bc)
		return err
	})
	return v, err
}

// put gives c back to the pool, or drops it and every idle one when it
// failed.
func (p *Pool) put(c *conn, ok bool) {
	if !ok {
		c.close()
		_ = p.Close()
		return
	}
	select {
	case p.idle <- c:
	default:
		c.close()
	}
}

// get takes an idle connection that is still open, or dials one.
func (p *Pool) get(ctx context.Context, op string) (*conn, error) {
	for c := p.idleConn(); c != nil; c = p.idleConn() {
		if c.alive() {
			return c, nil
		}
		c.close()
	}
	c, err := dial(ctx, p.addr, p.timeout)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if hook := p.onConnect.Load(); hook != nil && *hook != nil {
		var stats map[string]string
		ok, err := c.call(ctx, p.timeout, "stats", func(bc *beanstalk.Conn) (err error) {
			stats, err = bc.Stats()
			return err
		})
		if err == nil {
			c.process = Process(stats)
			err = (*hook)(ctx, unquote(stats))
		}
		if err != nil || !ok {
			c.close()
			return nil, fmt.Errorf("%s: %w", op, err)
		}
	}
	return c, nil
}

// PutOptions are the beanstalkd put parameters.
type PutOptions struct {
	Tube     string
	Priority uint32
	Delay    time.Duration
	TTR      time.Duration
}

// Put adds body to the tube and returns the new job's id. When beanstalkd
// buries the new job (ErrBuried) the id is returned with the error.
func (p *Pool) Put(ctx context.Context, body []byte, o PutOptions) (uint64, error) {
	tube := cmp.Or(o.Tube, DefaultTube)
	if err := ValidateTube(tube); err != nil {
		return 0, fmt.Errorf("put: %w", err)
	}
	id, err := ask(ctx, p.with, "put", func(bc *beanstalk.Conn) (uint64, error) { return put(bc, tube, body, o, max(o.Delay, 0)) })
	p.putDone(err)
	return id, err
}

// put puts body in tube with o's priority and TTR, delayed by delay. The
// id of a job beanstalkd buried comes with the error.
func put(bc *beanstalk.Conn, tube string, body []byte, o PutOptions, delay time.Duration) (uint64, error) {
	id, err := beanstalk.NewTube(bc, tube).Put(body, o.Priority, delay, max(o.TTR, time.Second))
	if bid, ok := buriedID(err); ok {
		id = bid
	}
	return id, err
}

// putDone notes whether beanstalkd refused a put for want of memory or
// disk, for Ping.
func (p *Pool) putDone(err error) {
	switch {
	case err == nil:
		p.refused.Store(0)
	case errors.Is(err, ErrServerFault):
		p.refused.Store(time.Now().UnixNano())
	}
}

// PutHeld puts body so that no worker can reserve it before check has
// agreed to its id, all on one connection, so that the job checked, and
// kicked or withdrawn, is the one put even if beanstalkd restarts
// meanwhile. check is told the connection's beanstalkd process (see
// Process; "" unless an OnConnect hook is set). A job with no delay is
// put delayed by hold and kicked to ready once check returns nil; a
// delayed job is held by its own delay, and check gets at most half of
// it. When check fails the job is deleted and check's error returned.
func (p *Pool) PutHeld(ctx context.Context, body []byte, o PutOptions, hold time.Duration, check func(ctx context.Context, id uint64, process string) error) (uint64, error) {
	tube := cmp.Or(o.Tube, DefaultTube)
	if err := ValidateTube(tube); err != nil {
		return 0, fmt.Errorf("put: %w", err)
	}
	c, err := p.get(ctx, "put")
	if err != nil {
		return 0, err
	}
	var id uint64
	ok, err := c.call(ctx, p.timeout, "put", func(bc *beanstalk.Conn) (err error) {
		id, err = put(bc, tube, body, o, cmp.Or(max(o.Delay, 0), hold))
		return err
	})
	p.putDone(err)
	if err != nil && !errors.Is(err, ErrBuried) { // a buried job is withdrawn below
		p.put(c, ok)
		return 0, err
	}
	cctx, cancel := context.WithTimeout(ctx, cmp.Or(o.Delay/2, hold/2))
	if err == nil {
		err = check(cctx, id, c.process)
	}
	cancel()
	op, finish := "kick-job", func(bc *beanstalk.Conn) error { return bc.KickJob(id) }
	if err != nil {
		op, finish = "withdraw", func(bc *beanstalk.Conn) error { return bc.Delete(id) }
	} else if o.Delay > 0 {
		p.put(c, true)
		return id, nil
	}
	// The job must be kicked or withdrawn though the caller gave up.
	ok, ferr := c.call(context.WithoutCancel(ctx), p.timeout, op, finish)
	p.put(c, ok)
	if err != nil {
		return 0, errors.Join(err, ferr)
	}
	return id, ferr
}

// StatsJob returns beanstalkd's statistics for job id, or ErrNotFound.
func (p *Pool) StatsJob(ctx context.Context, id uint64) (job.Stats, error) {
	m, err := ask(ctx, p.with, "stats-job", func(bc *beanstalk.Conn) (map[string]string, error) { return bc.StatsJob(id) })
	if err != nil {
		return job.Stats{}, err
	}
	return jobStats(m)
}

// Delete removes a ready, delayed or buried job. A reserved job can be
// deleted only by the connection that reserved it: here it answers
// ErrNotFound, and callers check the state first to tell the two apart.
func (p *Pool) Delete(ctx context.Context, id uint64) error {
	return p.with(ctx, "delete", func(bc *beanstalk.Conn) error { return bc.Delete(id) })
}

// Kick moves a buried or delayed job to ready (kick-job); KickTube moves
// a tube's.
func (p *Pool) Kick(ctx context.Context, id uint64) error {
	return p.with(ctx, "kick-job", func(bc *beanstalk.Conn) error { return bc.KickJob(id) })
}

// ServerStats returns beanstalkd's stats as strings, by name.
func (p *Pool) ServerStats(ctx context.Context) (map[string]string, error) {
	m, err := ask(ctx, p.with, "stats", (*beanstalk.Conn).Stats)
	return unquote(m), err
}

// unquote strips the double quotes around beanstalkd's string values
// (version, hostname), which go-beanstalk keeps.
func unquote(m map[string]string) map[string]string {
	for k, v := range m {
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			m[k] = v[1 : len(v)-1]
		}
	}
	return m
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

// Ping checks that beanstalkd answers and takes jobs. A beanstalkd out
// of memory, or with its binlog disk full, answers stats but refuses
// puts: Ping reports ErrServerFault while the last put was refused so,
// within the last 10s.
func (p *Pool) Ping(ctx context.Context) error {
	if at := p.refused.Load(); at != 0 && time.Since(time.Unix(0, at)) < faultFor {
		return fmt.Errorf("ping: the last put was refused: %w", ErrServerFault)
	}
	_, err := p.ServerStats(ctx)
	return err
}

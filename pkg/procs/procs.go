// Package procs starts, watches and stops the child processes of a local
// stack: beanstalkd, devmongo and the three services. pkg/testenv (the
// test harness), tools/loadgen (the benchmark) and tools/devstack
// (`make run`) all start their children here, so a child is started,
// logged, waited for and stopped the same way everywhere; stack.go is the
// one place that knows the stack's parts, default ports and wiring.
//
// A child's output is read line by line: the last TailBytes stay in memory
// for error messages (Tail, Failed), and every line also goes to
// Spec.Output after Spec.Prefix and to Spec.LogFile, when set. Stop sends
// SIGTERM, then SIGKILL after Spec.Grace; a Group stops its children
// newest first and reports the first that exits unasked (Exited).
//
// # Ports
//
// A test or benchmark must not pick a port, close it and hope it is still
// free when the child binds it: another process can take it in between.
// So each child gets its address the race-free way it supports:
//
//   - a service (manager, worker, notifier) is handed a listener the
//     parent bound (Spec.Listen, port 0 for any), passed as fd 3 with
//     LISTEN_FDS=1, the systemd convention the services accept through
//     config.Listen; in-process tests give run port 0 and learn the
//     address from its ready callback;
//   - devmongo and loadgen's reference servers listen on port 0 themselves
//     and print "listening <url>", which Spec.Ready picks up (WaitReady);
//   - beanstalkd can neither take a listener nor report its port, so it
//     gets a FreePort and is started again on another when the bind fails
//     (StartOnFreePort).
//
// devstack runs on the fixed default ports (ManagerPort and the others),
// where a person expects them, still binding the services' ports itself.
package procs

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// TailBytes is how much of a child's recent output is kept for error
// messages; older output is dropped.
const TailBytes = 64 << 10

// maxLine bounds one line of output: a longer one is passed on in pieces,
// so a child that never writes a newline cannot grow the reader's buffer.
const maxLine = 64 << 10

// Spec says how to run a child.
type Spec struct {
	// Name names the child in errors and, with Prefix, in its output.
	Name string
	// Path is the executable; Args its arguments.
	Path string
	Args []string
	// Env is the child's environment on top of PATH and HOME, unless
	// Inherit is set, when it is added to the parent's whole environment.
	// A clean environment keeps the caller's BEANSTALK_* or LOG_LEVEL out
	// of what a test or benchmark runs.
	Env     []string
	Inherit bool
	// Dir is the working directory; "" is the parent's.
	Dir string
	// Output, when set, gets every line the child writes to stdout or
	// stderr, after Prefix. Writes to one Output from many children are
	// serialised.
	Output io.Writer
	Prefix string
	// LogFile, when set, gets every line as written, appended; it is
	// closed when the child exits.
	LogFile string
	// Ready, when set, is shown every line until it returns true; the
	// value it returns is what WaitReady returns.
	Ready func(line string) (string, bool)
	// Listen, when set, is a TCP address the parent binds (port 0: any
	// free port) and hands to the child as fd 3 with LISTEN_FDS=1; the
	// child serves on it instead of binding a port itself. The parent
	// closes its copy once the child runs, so a stopped child refuses
	// connections as a real one would; Restart binds the same port again.
	Listen string
	// Grace is how long Stop waits after SIGTERM before SIGKILL; 0 is
	// StopGrace.
	Grace time.Duration
	// ParentDeath is the signal the child gets when the parent dies
	// without stopping it; 0 is SIGKILL.
	ParentDeath syscall.Signal
}

// Proc is a running (or exited) child. Restart runs it again from the
// same Spec.
type Proc struct {
	spec Spec

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{}
	ready    chan string
	stopping bool
	onExit   func(*Proc)

	tail tail
}

// Start starts the child described by s.
func Start(s Spec) (*Proc, error) {
	p := &Proc{spec: s}
	if err := p.run(); err != nil {
		return nil, err
	}
	return p, nil
}

// Name is the Spec's name.
func (p *Proc) Name() string { return p.spec.Name }

// Restart starts the child again after it has exited, with the same Spec.
func (p *Proc) Restart() error {
	select {
	case <-p.Done():
	default:
		return fmt.Errorf("restart %s: it is still running", p.spec.Name)
	}
	return p.run()
}

// SetArgs replaces the arguments of the next Restart.
func (p *Proc) SetArgs(args []string) { p.spec.Args = args }

func (p *Proc) run() error {
	s := p.spec
	cmd := exec.Command(s.Path, s.Args...)
	cmd.Dir = s.Dir
	if s.Inherit {
		cmd.Env = append(os.Environ(), s.Env...)
	} else {
		cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, s.Env...)
	}
	// Its own process group keeps a terminal's Ctrl-C from reaching the
	// child before the parent stops it in order; Pdeathsig takes it down
	// with a parent that dies without stopping it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: cmp.Or(s.ParentDeath, syscall.SIGKILL)}
	if s.Listen != "" {
		f, addr, err := listenFile(s.Listen)
		if err != nil {
			return fmt.Errorf("start %s: %w", s.Name, err)
		}
		defer f.Close() // the child has its own copy
		cmd.ExtraFiles = []*os.File{f}
		cmd.Env = append(cmd.Env, "LISTEN_FDS=1")
		p.spec.Listen = addr // a restart takes the same port
	}
	var logFile *os.File
	if s.LogFile != "" {
		f, err := os.OpenFile(s.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("start %s: %w", s.Name, err)
		}
		logFile = f
	}
	r, w, err := os.Pipe()
	if err != nil {
		closeFile(logFile)
		return fmt.Errorf("start %s: %w", s.Name, err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		closeFile(logFile)
		return fmt.Errorf("start %s (%s): %w", s.Name, s.Path, err)
	}
	w.Close() // the child holds the write end; EOF comes when it exits
	done, ready := make(chan struct{}), make(chan string, 1)
	p.mu.Lock()
	p.cmd, p.done, p.ready, p.stopping = cmd, done, ready, false
	p.mu.Unlock()

	read := make(chan struct{})
	go func() { defer close(read); p.read(r, logFile, ready) }()
	go func() {
		_ = cmd.Wait()
		<-read // all output is in the tail before anyone hears of the exit
		r.Close()
		closeFile(logFile)
		close(done)
		p.mu.Lock()
		unexpected, onExit := !p.stopping, p.onExit
		p.mu.Unlock()
		if unexpected && onExit != nil {
			onExit(p)
		}
	}()
	return nil
}

// listenFile binds addr and returns the listener's file and address.
func listenFile(addr string) (*os.File, string, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", fmt.Errorf("listen on %s: %w", addr, err)
	}
	defer l.Close()
	f, err := l.(*net.TCPListener).File()
	if err != nil {
		return nil, "", fmt.Errorf("listener on %s: %w", addr, err)
	}
	return f, l.Addr().String(), nil
}

// Addr is the address of the listener handed to the child (Spec.Listen),
// with the port it got.
func (p *Proc) Addr() string { return p.spec.Listen }

// outputMu serialises lines written to a shared Output.
var outputMu sync.Mutex

// closeFile closes f when it is set.
func closeFile(f *os.File) {
	if f != nil {
		_ = f.Close()
	}
}

func (p *Proc) read(r io.Reader, logFile *os.File, ready chan<- string) {
	br := bufio.NewReaderSize(r, maxLine)
	matched := p.spec.Ready == nil
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			p.tail.Write(line)
			if logFile != nil {
				_, _ = logFile.Write(line)
			}
			text := strings.TrimSuffix(string(line), "\n")
			if !matched {
				if v, ok := p.spec.Ready(text); ok {
					matched = true
					ready <- v
				}
			}
			if out := p.spec.Output; out != nil {
				outputMu.Lock()
				_, _ = io.WriteString(out, p.spec.Prefix+text+"\n")
				outputMu.Unlock()
			}
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

// Done is closed when the current run of the child has exited and its
// output has been read.
func (p *Proc) Done() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

// Exited reports whether the current run has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.Done():
		return true
	default:
		return false
	}
}

// Pid is the process id of the current run.
func (p *Proc) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd.Process.Pid
}

// ExitCode is the exit code of the last run once Done is closed: -1 when
// it was killed by a signal or has not exited.
func (p *Proc) ExitCode() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd.ProcessState == nil {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

// Tail returns the last TailBytes the child wrote.
func (p *Proc) Tail() string { return p.tail.String() }

// Failed wraps err with the child's name and the end of its output.
func (p *Proc) Failed(err error) error {
	t := p.tail.String()
	if len(t) > 2000 {
		t = t[len(t)-2000:]
	}
	if t = strings.TrimSpace(t); t != "" {
		return fmt.Errorf("%s: %w\n--- %s output (end) ---\n%s", p.spec.Name, err, p.spec.Name, t)
	}
	return fmt.Errorf("%s: %w", p.spec.Name, err)
}

// Signal sends sig and waits up to grace for the child to exit, then
// kills it. An exit after Signal is not reported as unexpected.
func (p *Proc) Signal(sig syscall.Signal, grace time.Duration) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.stopping = true
	p.mu.Unlock()
	select {
	case <-done:
		return
	default:
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-done
	}
}

// StopGrace is how long Stop waits after SIGTERM before SIGKILL. The
// services finish their work in flight within it.
const StopGrace = 35 * time.Second

// Stop stops the child with SIGTERM, then SIGKILL after Spec.Grace.
func (p *Proc) Stop() { p.Signal(syscall.SIGTERM, cmp.Or(p.spec.Grace, StopGrace)) }

// Kill stops the child with SIGKILL, as a crash would.
func (p *Proc) Kill() { p.Signal(syscall.SIGKILL, StopGrace) }

// WaitReady waits until Spec.Ready matched a line and returns its value.
func (p *Proc) WaitReady(ctx context.Context, within time.Duration) (string, error) {
	p.mu.Lock()
	ready, done := p.ready, p.done
	p.mu.Unlock()
	if p.spec.Ready == nil {
		return "", fmt.Errorf("%s: no Ready in its Spec", p.spec.Name)
	}
	t := time.NewTimer(within)
	defer t.Stop()
	select {
	case v := <-ready:
		ready <- v // a second WaitReady gets it too
		return v, nil
	case <-done:
		select {
		case v := <-ready:
			ready <- v
			return v, nil
		default:
		}
		return "", p.Failed(errors.New("exited before it was ready"))
	case <-t.C:
		return "", p.Failed(fmt.Errorf("not ready within %s", within))
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// WaitFor polls check until it succeeds, failing when the child exits
// first, within passes or ctx ends. what names the check in errors.
func (p *Proc) WaitFor(ctx context.Context, within time.Duration, what string, check func() error) error {
	err := Poll(ctx, within, what, p.Done(), check)
	if err != nil && ctx.Err() == nil {
		return p.Failed(err)
	}
	return err
}

// Poll calls check every 25ms until it succeeds, exited is closed (nil:
// never), within passes or ctx ends.
func Poll(ctx context.Context, within time.Duration, what string, exited <-chan struct{}, check func() error) error {
	deadline := time.Now().Add(within)
	for {
		err := check()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("exited while waiting for %s", what)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready within %s: %w", what, within, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-exited:
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// TCP is a check that addr accepts a connection.
func TCP(addr string) func() error {
	return func() error {
		c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
		if err != nil {
			return err
		}
		return c.Close()
	}
}

// HTTP is a check that url answers 200.
func HTTP(url string) func() error {
	client := http.Client{Timeout: time.Second}
	return func() error {
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: status %d", url, resp.StatusCode)
		}
		return nil
	}
}

// Group is the children of one stack: it stops them newest first and
// tells when one exits that nobody stopped.
type Group struct {
	mu        sync.Mutex
	procs     []*Proc
	exitOnce  sync.Once
	exited    chan struct{}
	firstExit *Proc
}

// Start starts a child as a member of g.
func (g *Group) Start(s Spec) (*Proc, error) {
	g.init()
	p := &Proc{spec: s, onExit: g.unexpected}
	if err := p.run(); err != nil {
		return nil, err
	}
	g.mu.Lock()
	g.procs = append(g.procs, p)
	g.mu.Unlock()
	return p, nil
}

func (g *Group) init() {
	g.mu.Lock()
	if g.exited == nil {
		g.exited = make(chan struct{})
	}
	g.mu.Unlock()
}

func (g *Group) unexpected(p *Proc) {
	g.exitOnce.Do(func() {
		g.mu.Lock()
		g.firstExit = p
		g.mu.Unlock()
		close(g.exited)
	})
}

// Exited is closed when the first child exits without being stopped;
// FirstExit says which.
func (g *Group) Exited() <-chan struct{} {
	g.init()
	return g.exited
}

// FirstExit is the first child that exited without being stopped, or nil.
func (g *Group) FirstExit() *Proc {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.firstExit
}

// Procs returns the members, oldest first.
func (g *Group) Procs() []*Proc {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.procs)
}

// Stop stops ps, newest first, and forgets them; nil ones are skipped.
func (g *Group) Stop(ps ...*Proc) {
	for _, p := range slices.Backward(ps) {
		if p != nil {
			p.Stop()
		}
	}
	g.mu.Lock()
	g.procs = slices.DeleteFunc(g.procs, func(p *Proc) bool { return slices.Contains(ps, p) })
	g.mu.Unlock()
}

// StopAll stops every member, newest first: the services before the
// servers they use.
func (g *Group) StopAll() { g.Stop(g.Procs()...) }

// tail keeps the last TailBytes written.
type tail struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tail) Write(p []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - TailBytes; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

package handler

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"
)

// ExecPrefix starts a WORKER_HANDLERS entry that runs a program:
// "tube:exec:/absolute/path".
const ExecPrefix = "exec:"

// Limits of an exec handler.
const (
	// DefaultMaxOutput is the most stdout kept (WORKER_EXEC_MAX_OUTPUT).
	DefaultMaxOutput = 1 << 20
	// stderrTail is how much of the end of stderr a failure's error keeps.
	stderrTail = 4 << 10
	// pipeWait bounds the wait for the output pipes once the program has
	// exited or been killed: a descendant that left the process group
	// may hold them open.
	pipeWait = 2 * time.Second
)

// ExecOptions configure the exec handlers.
type ExecOptions struct {
	// Timeout bounds one run (WORKER_EXEC_TIMEOUT); 0 leaves only the
	// job's TTR.
	Timeout time.Duration
	// MaxOutput is the most stdout a run may write; past it the run
	// fails. 0 means DefaultMaxOutput.
	MaxOutput int
	// Env is the environment the programs get, before the job's
	// variables; see SafeEnv.
	Env []string
}

// CheckProgram reports why path cannot be an exec handler's program: not
// absolute, missing, a directory, or not executable.
func CheckProgram(path string) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("program %q: the path must be absolute", path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("program %q: %w", path, errors.Unwrap(err))
	}
	if fi.IsDir() {
		return fmt.Errorf("program %q is a directory", path)
	}
	if err := syscall.Access(path, 0x1 /* X_OK */); err != nil || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("program %q is not executable", path)
	}
	return nil
}

// SafeEnv returns environ without the worker's secrets: API_TOKEN and
// API_TOKEN_FILE are left out, and a MongoDB URL loses its password.
func SafeEnv(environ []string) []string {
	out := make([]string, 0, len(environ))
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		switch {
		case k == "API_TOKEN" || k == "API_TOKEN_FILE":
			continue
		case strings.HasPrefix(v, "mongodb://") || strings.HasPrefix(v, "mongodb+srv://"):
			if u, err := url.Parse(v); err == nil && u.User != nil {
				if _, has := u.User.Password(); has {
					u.User = url.User(u.User.Username())
					kv = k + "=" + u.String()
				}
			} else if err != nil {
				continue // unparsable: it may hold a password
			}
		}
		out = append(out, kv)
	}
	return out
}

// Exec returns the handler that runs the program at path for each job:
// no shell, the payload on stdin, JOB_ID, JOB_TUBE and JOB_ATTEMPT in its
// environment, in its own process group, which is killed when the run's
// time is up (the job's TTR less a margin, or o.Timeout) or ctx ends.
// Exit 0: stdout is the result (see Raw). Otherwise the run failed, and
// the error holds the exit status and the end of stderr.
func Exec(path string, o ExecOptions) Handler {
	if o.MaxOutput <= 0 {
		o.MaxOutput = DefaultMaxOutput
	}
	return Func(func(ctx context.Context, j Job) (Output, error) {
		return runProgram(ctx, path, o, j)
	})
}

// ErrOutputTooLarge is the failure of a run whose stdout passed the cap.
var ErrOutputTooLarge = errors.New("stdout is larger than WORKER_EXEC_MAX_OUTPUT")

// limit is how long a run of j may take: the job's TTR less a margin
// (a tenth, at most a second), and at most timeout when it is set.
func limit(ttr, timeout time.Duration) (time.Duration, string) {
	if ttr <= 0 {
		if timeout > 0 {
			return timeout, "WORKER_EXEC_TIMEOUT"
		}
		return 0, ""
	}
	d := ttr - min(ttr/10, time.Second)
	if timeout > 0 && timeout < d {
		return timeout, "WORKER_EXEC_TIMEOUT"
	}
	return d, "the job's TTR less a margin"
}

func runProgram(ctx context.Context, path string, o ExecOptions, j Job) (Output, error) {
	d, why := limit(j.TTR, o.Timeout)
	if d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, d, fmt.Errorf("killed after %s (%s)", d, why))
		defer cancel()
	}
	ctx, cancelRun := context.WithCancelCause(ctx)
	defer cancelRun(nil)

	cmd := exec.Command(path)
	cmd.Env = append(append([]string(nil), o.Env...),
		"JOB_ID="+strconv.FormatUint(j.ID, 10), "JOB_TUBE="+j.Tube, "JOB_ATTEMPT="+strconv.Itoa(j.Attempt))
	cmd.Dir = filepath.Dir(path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout := &capped{max: o.MaxOutput, over: func() { cancelRun(ErrOutputTooLarge) }}
	stderr := &tail{max: stderrTail}
	// The pipes are this function's own, not os/exec's: its Wait would
	// wait for every process holding them, and the group is killed only
	// once the program has exited.
	p, err := openPipes(cmd, j.Body, stdout, stderr)
	if err != nil {
		return Output{}, fmt.Errorf("run %s: %w", path, err)
	}
	if err := cmd.Start(); err != nil {
		p.abort()
		return Output{}, fmt.Errorf("start %s: %w", path, err)
	}
	p.started()
	pgid := cmd.Process.Pid
	killGroup := func() { _ = syscall.Kill(-pgid, syscall.SIGKILL) }
	stop := context.AfterFunc(ctx, killGroup)
	err = cmd.Wait()
	stop()
	// Whatever the program left behind in its group goes with it.
	killGroup()
	p.wait(pipeWait)

	if cause := context.Cause(ctx); cause != nil {
		return Output{}, failure(cause.Error(), stderr)
	}
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr):
		return Output{}, failure(exitErr.String(), stderr) // "exit status 3", "signal: killed"
	case err != nil:
		return Output{}, failure(fmt.Sprintf("%s: %v", path, err), stderr)
	}
	return Raw(stdout.bytes()), nil
}

// pipes feed a program its stdin and read its stdout and stderr.
type pipes struct {
	child  []*os.File // the program's ends, closed here once it started
	parent []*os.File // this process's ends
	done   sync.WaitGroup
}

func openPipes(cmd *exec.Cmd, stdin []byte, stdout, stderr io.Writer) (*pipes, error) {
	p := &pipes{}
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	p.child, p.parent = append(p.child, inR), append(p.parent, inW)
	outs := []io.Writer{stdout, stderr}
	files := make([]*os.File, 2)
	for i := range outs {
		r, w, err := os.Pipe()
		if err != nil {
			p.abort()
			return nil, err
		}
		p.child, p.parent = append(p.child, w), append(p.parent, r)
		files[i] = w
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, files[0], files[1]
	p.done.Go(func() {
		// A program that never reads stdin makes this write fail (EPIPE)
		// or block until the group is killed: neither is an error.
		_, _ = inW.Write(stdin)
		_ = inW.Close()
	})
	for i, w := range outs {
		r := p.parent[i+1]
		p.done.Go(func() { _, _ = io.Copy(w, r) })
	}
	return p, nil
}

// started closes the program's ends, so the readers see EOF when it and
// its children are gone.
func (p *pipes) started() {
	for _, f := range p.child {
		_ = f.Close()
	}
}

// abort closes every end of pipes whose program did not start.
func (p *pipes) abort() {
	p.started()
	for _, f := range p.parent {
		_ = f.Close()
	}
	p.done.Wait()
}

// wait waits for stdin to be written and the output to be read, at most
// d: a process that left the group may hold the pipes open.
func (p *pipes) wait(d time.Duration) {
	done := make(chan struct{})
	go func() { p.done.Wait(); close(done) }()
	select {
	case <-done:
		return
	case <-time.After(d):
	}
	for _, f := range p.parent {
		_ = f.Close()
	}
	<-done
}

// failure is a run's error: what happened, then the end of stderr.
func failure(what string, stderr *tail) error {
	text := strings.TrimSpace(strings.ToValidUTF8(string(stderr.bytes()), "\uFFFD"))
	if text == "" {
		return errors.New(what)
	}
	return fmt.Errorf("%s: %s", what, text)
}

// capped keeps up to max bytes and calls over once when more come. It
// never fails a write, so the program is not killed by SIGPIPE before
// over has killed it.
type capped struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	max  int
	done bool
	over func()
}

func (c *capped) bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Bytes()
}

func (c *capped) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return len(p), nil
	}
	if c.buf.Len()+len(p) > c.max {
		c.done = true
		c.over()
		return len(p), nil
	}
	c.buf.Write(p)
	return len(p), nil
}

// tail keeps the last max bytes written, starting at a rune boundary.
type tail struct {
	mu      sync.Mutex
	buf     []byte
	max     int
	dropped bool
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if n := len(t.buf) - t.max; n > 0 {
		t.buf = append(t.buf[:0], t.buf[n:]...)
		t.dropped = true
	}
	return len(p), nil
}

func (t *tail) bytes() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.buf
	if t.dropped {
		for len(b) > 0 && !utf8.RuneStart(b[0]) {
			b = b[1:]
		}
		b = append([]byte("…"), b...)
	}
	return b
}

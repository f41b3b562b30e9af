package main

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/joho/godotenv"

	"github.com/jobsys/jobs/tools/internal/sysdeps"
)

// settings are what devstack needs to know to start and wire the parts.
// The services read the same variables (and the same .env) themselves.
type settings struct {
	binDir        string
	dataDir       string
	beanstalkHost string
	beanstalkPort string
	mongoURL      string
	managerPort   string
	notifierPort  string
	workers       int
	workerPort    int
}

func load(getenv func(string) string) (settings, error) {
	file, err := godotenv.Read(".env")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return settings{}, fmt.Errorf("read .env: %w", err)
	}
	get := func(k, def string) string { return cmp.Or(getenv(k), file[k], def) }
	s := settings{
		binDir:        get("DEVSTACK_BIN", "bin"),
		dataDir:       get("DEVSTACK_DATA", "data"),
		beanstalkHost: get("BEANSTALK_HOST", "127.0.0.1"),
		beanstalkPort: get("BEANSTALK_PORT", "11300"),
		mongoURL:      get("MONGO_URL", "mongodb://127.0.0.1:27017"),
		managerPort:   get("MANAGER_LISTEN_PORT", "8080"),
		notifierPort:  get("NOTIFIER_LISTEN_PORT", "8083"),
	}
	var errs []error
	if s.workers, err = strconv.Atoi(get("DEVSTACK_WORKERS", "2")); err != nil || s.workers < 1 || s.workers > 64 {
		errs = append(errs, fmt.Errorf("DEVSTACK_WORKERS: %q is not a number from 1 to 64", get("DEVSTACK_WORKERS", "")))
	}
	if s.workerPort, err = strconv.Atoi(get("WORKER_METRICS_PORT", "8084")); err != nil || s.workerPort < 1 || s.workerPort > 65535-s.workers {
		errs = append(errs, fmt.Errorf("WORKER_METRICS_PORT: %q is not a usable port", get("WORKER_METRICS_PORT", "")))
	}
	return s, errors.Join(errs...)
}

func run(ctx context.Context, getenv func(string) string, out io.Writer) error {
	s, err := load(getenv)
	if err != nil {
		return err
	}
	st := &stack{out: out}
	defer st.stopAll()

	beanstalkAddr := net.JoinHostPort(s.beanstalkHost, s.beanstalkPort)
	if answers(beanstalkAddr) {
		st.logf("devstack", "beanstalkd already answers at %s: using it", beanstalkAddr)
	} else {
		path, err := ensureBeanstalkd(ctx, st)
		if err != nil {
			return err
		}
		binlog := filepath.Join(s.dataDir, "beanstalkd")
		if err := os.MkdirAll(binlog, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", binlog, err)
		}
		if err := st.start(ctx, "beanstalkd", path, nil, "-l", s.beanstalkHost, "-p", s.beanstalkPort, "-b", binlog, "-f", "50"); err != nil {
			return err
		}
		if err := waitFor(ctx, st, "beanstalkd", func() bool { return answers(beanstalkAddr) }); err != nil {
			return err
		}
	}

	u, err := url.Parse(s.mongoURL)
	if err != nil {
		return fmt.Errorf("MONGO_URL %q: %w", s.mongoURL, err)
	}
	mongoAddr := u.Host
	if _, _, err := net.SplitHostPort(mongoAddr); err != nil {
		mongoAddr = net.JoinHostPort(mongoAddr, "27017")
	}
	if answers(mongoAddr) {
		st.logf("devstack", "MongoDB already answers at %s: using it", mongoAddr)
	} else {
		if err := st.start(ctx, "devmongo", filepath.Join(s.binDir, "devmongo"), nil, "-listen", mongoAddr, "-data", filepath.Join(s.dataDir, "mongo")); err != nil {
			return err
		}
		if err := waitFor(ctx, st, "devmongo", func() bool { return answers(mongoAddr) }); err != nil {
			return err
		}
	}

	base := []string{"BEANSTALK_HOST=" + s.beanstalkHost, "BEANSTALK_PORT=" + s.beanstalkPort, "MONGO_URL=" + s.mongoURL}
	if getenv("LOG_FORMAT") == "" {
		// The services write JSON when their output is not a terminal;
		// here a person reads it.
		base = append(base, "LOG_FORMAT=text")
	}
	managerURL := "http://127.0.0.1:" + s.managerPort
	notifierURL := "http://127.0.0.1:" + s.notifierPort
	if err := st.start(ctx, "manager", filepath.Join(s.binDir, "manager"), base); err != nil {
		return err
	}
	health := []string{managerURL + "/healthz"}
	for i := range s.workers {
		port := strconv.Itoa(s.workerPort + i)
		name := fmt.Sprintf("worker-%d", i+1)
		env := append([]string{"WORKER_METRICS_PORT=" + port, "WORKER_ID=" + name}, base...)
		if err := st.start(ctx, name, filepath.Join(s.binDir, "worker"), env); err != nil {
			return err
		}
		health = append(health, "http://127.0.0.1:"+port+"/healthz")
	}
	if err := st.start(ctx, "notifier", filepath.Join(s.binDir, "notifier"), append([]string{"MANAGER_URL=" + managerURL}, base...)); err != nil {
		return err
	}
	health = append(health, notifierURL+"/healthz")
	for _, h := range health {
		if err := waitFor(ctx, st, h, func() bool { return healthy(h) }); err != nil {
			return err
		}
	}

	fmt.Fprintf(out, `
  The stack is up. Ctrl-C stops it.

  Job board     %[2]s/
  API           %[1]s/
                  curl -X POST %[1]s -H "Content-Type: application/json" --data '{"example":"data"}'
                  curl %[1]s/1/
  Events (SSE)  curl -N %[2]s/events
  Metrics       %[1]s/metrics  %[2]s/metrics
  beanstalkd    %[3]s
  MongoDB       %[4]s
  Data          ./%[5]s (delete it to start afresh)

`, managerURL, notifierURL, beanstalkAddr, s.mongoURL, s.dataDir)

	select {
	case <-ctx.Done():
		st.logf("devstack", "stopping")
		return nil
	case name := <-st.exited:
		return fmt.Errorf("%s exited; stopping the rest", name)
	}
}

func answers(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func healthy(u string) bool {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(u)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func waitFor(ctx context.Context, st *stack, what string, ok func() bool) error {
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case name := <-st.exited:
			return fmt.Errorf("%s exited while waiting for %s", name, what)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not come up within 30s", what)
		}
	}
	return nil
}

// ensureBeanstalkd finds beanstalkd, installing it with apt-get when it is
// missing and we are root.
func ensureBeanstalkd(ctx context.Context, st *stack) (string, error) {
	p := sysdeps.Known["beanstalkd"]
	logf := func(format string, args ...any) { st.logf("devstack", format, args...) }
	if err := sysdeps.Ensure(ctx, sysdeps.System{}, logf, p); err != nil {
		return "", err
	}
	return exec.LookPath(p.Command)
}

// stack supervises the child processes.
type stack struct {
	out    io.Writer
	mu     sync.Mutex
	procs  []*proc
	exited chan string
}

type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

func (st *stack) logf(name, format string, args ...any) {
	st.mu.Lock()
	defer st.mu.Unlock()
	fmt.Fprintf(st.out, "%-10s | %s\n", name, fmt.Sprintf(format, args...))
}

func (st *stack) start(ctx context.Context, name, path string, env []string, args ...string) error {
	if st.exited == nil {
		st.exited = make(chan string, 16)
	}
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	r, w := io.Pipe()
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s (%s): %w", name, path, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			st.logf(name, "%s", sc.Text())
		}
	}()
	go func() {
		err := cmd.Wait()
		w.Close()
		close(p.done)
		if ctx.Err() == nil {
			st.logf(name, "exited: %v", err)
			st.exited <- name
		}
	}()
	st.mu.Lock()
	st.procs = append(st.procs, p)
	st.mu.Unlock()
	return nil
}

// stopAll stops the services first and the servers last, each with
// SIGTERM and a deadline.
func (st *stack) stopAll() {
	st.mu.Lock()
	procs := st.procs
	st.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		p := procs[i]
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(35 * time.Second):
			st.logf(p.name, "did not stop within 35s: killing it")
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
}

package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	pkgconfig "github.com/jobsys/jobs/pkg/config"
	"github.com/jobsys/jobs/pkg/procs"
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
	// hosts are the services' listen addresses by HostVar ("": every
	// interface, their default). A service port of 0 is one on the
	// loopback that devstack chooses, for tests.
	hosts        map[string]string
	managerPort  string
	notifierPort string
	workers      int
	workerPort   int
}

func load(getenv func(string) string) (settings, error) {
	env, err := pkgconfig.WithDotEnv(getenv, ".env")
	if err != nil {
		return settings{}, err
	}
	get := func(k, def string) string { return cmp.Or(env(k), def) }
	s := settings{
		binDir:        get("DEVSTACK_BIN", "bin"),
		dataDir:       get("DEVSTACK_DATA", "data"),
		beanstalkHost: get("BEANSTALK_HOST", "127.0.0.1"),
		beanstalkPort: get("BEANSTALK_PORT", strconv.Itoa(procs.BeanstalkdPort)),
		mongoURL:      get("MONGO_URL", "mongodb://127.0.0.1:"+strconv.Itoa(procs.MongoPort)),
		hosts:         map[string]string{},
		managerPort:   get(procs.Manager.PortVar, strconv.Itoa(procs.Manager.DefaultPort)),
		notifierPort:  get(procs.Notifier.PortVar, strconv.Itoa(procs.Notifier.DefaultPort)),
	}
	for _, svc := range []procs.Service{procs.Manager, procs.Worker, procs.Notifier} {
		s.hosts[svc.HostVar] = env(svc.HostVar)
	}
	var errs []error
	if s.workers, err = strconv.Atoi(get("DEVSTACK_WORKERS", "2")); err != nil || s.workers < 1 || s.workers > 64 {
		errs = append(errs, fmt.Errorf("DEVSTACK_WORKERS: %q is not a number from 1 to 64", get("DEVSTACK_WORKERS", "")))
	}
	if s.workerPort, err = strconv.Atoi(get(procs.Worker.PortVar, strconv.Itoa(procs.Worker.DefaultPort))); err != nil || s.workerPort < 0 || s.workerPort > 65535-s.workers {
		errs = append(errs, fmt.Errorf("%s: %q is not a usable port", procs.Worker.PortVar, get(procs.Worker.PortVar, "")))
	}
	return s, errors.Join(errs...)
}

func run(ctx context.Context, getenv func(string) string, out io.Writer) error {
	s, err := load(getenv)
	if err != nil {
		return err
	}
	st := &stack{out: out}
	defer st.g.StopAll()

	beanstalkAddr := net.JoinHostPort(s.beanstalkHost, s.beanstalkPort)
	if procs.TCP(beanstalkAddr)() == nil {
		st.logf("beanstalkd already answers at %s: using it", beanstalkAddr)
	} else {
		path, err := ensureBeanstalkd(ctx, st)
		if err != nil {
			return err
		}
		binlog := filepath.Join(s.dataDir, "beanstalkd")
		if err := os.MkdirAll(binlog, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", binlog, err)
		}
		port, err := strconv.Atoi(s.beanstalkPort)
		if err != nil {
			return fmt.Errorf("BEANSTALK_PORT: %q is not a port", s.beanstalkPort)
		}
		p, err := st.start(procs.Spec{Name: "beanstalkd", Path: path, Args: procs.BeanstalkdArgs(s.beanstalkHost, port, binlog, 50, 0)})
		if err != nil {
			return err
		}
		if err := p.WaitFor(ctx, upWithin, "beanstalkd", procs.TCP(beanstalkAddr)); err != nil {
			return err
		}
	}

	u, err := url.Parse(s.mongoURL)
	if err != nil {
		return fmt.Errorf("MONGO_URL %q: %w", s.mongoURL, err)
	}
	mongoAddr := u.Host
	if _, _, err := net.SplitHostPort(mongoAddr); err != nil {
		mongoAddr = net.JoinHostPort(mongoAddr, strconv.Itoa(procs.MongoPort))
	}
	if procs.TCP(mongoAddr)() == nil {
		st.logf("MongoDB already answers at %s: using it", mongoAddr)
	} else {
		p, err := st.start(procs.Devmongo(filepath.Join(s.binDir, "devmongo"), mongoAddr, filepath.Join(s.dataDir, "mongo")))
		if err != nil {
			return err
		}
		if _, err := p.WaitReady(ctx, upWithin); err != nil {
			return err
		}
	}

	servers := procs.Servers{BeanstalkAddr: beanstalkAddr, MongoURL: s.mongoURL}
	base := map[string]string{}
	if getenv("LOG_FORMAT") == "" {
		// The services write JSON when their output is not a terminal;
		// here a person reads it.
		base["LOG_FORMAT"] = "text"
	}
	service := func(svc procs.Service, name, port string, env map[string]string) (*procs.Proc, error) {
		vars := map[string]string{svc.PortVar: port, svc.HostVar: s.hosts[svc.HostVar]}
		maps.Copy(vars, base)
		maps.Copy(vars, env)
		spec := procs.ServiceSpec(svc, filepath.Join(s.binDir, svc.Name), servers, vars)
		spec.Name = name
		return st.start(spec)
	}
	var started []*procs.Proc
	m, err := service(procs.Manager, "manager", s.managerPort, nil)
	if err != nil {
		return err
	}
	managerURL := procs.URL(m)
	started = append(started, m)
	for i := range s.workers {
		name := fmt.Sprintf("worker-%d", i+1)
		port := 0 // every worker on a port of its own choosing
		if s.workerPort > 0 {
			port = s.workerPort + i
		}
		w, err := service(procs.Worker, name, strconv.Itoa(port), procs.WorkerEnv(name, ""))
		if err != nil {
			return err
		}
		started = append(started, w)
	}
	n, err := service(procs.Notifier, "notifier", s.notifierPort, procs.NotifierEnv(managerURL))
	if err != nil {
		return err
	}
	notifierURL := procs.URL(n)
	started = append(started, n)
	for _, p := range started {
		if err := procs.WaitHealthy(ctx, p, procs.URL(p), upWithin); err != nil {
			return err
		}
	}

	fmt.Fprintf(out, `
  The stack is up. Ctrl-C stops it; a part that exits is restarted.

  Job board     %[2]s/
  API           %[1]s/
                  curl -X POST %[1]s -H "Content-Type: application/json" --data '{"example":"data"}'
                  curl %[1]s/1/
  Events (SSE)  curl -N %[2]s/events
  Metrics       %[1]s/metrics  %[2]s/metrics
  beanstalkd    %[3]s
  MongoDB       %[4]s
  Data          %[5]s (delete it to start afresh)

`, managerURL, notifierURL, beanstalkAddr, s.mongoURL, shown(s.dataDir))

	// A part that exits is started again with back-off; Ctrl-C stops all.
	st.supervise(ctx, st.g.Procs())
	st.logf("stopping")
	return nil
}

// shown is dir as a person types it: relative ones start with "./".
func shown(dir string) string {
	if filepath.IsAbs(dir) {
		return dir
	}
	return "." + string(filepath.Separator) + dir
}

// upWithin bounds the wait for each part to come up.
const upWithin = 30 * time.Second

// ensureBeanstalkd finds beanstalkd, installing it with apt-get when it is
// missing and we are root.
func ensureBeanstalkd(ctx context.Context, st *stack) (string, error) {
	p := sysdeps.Known["beanstalkd"]
	if err := sysdeps.Ensure(ctx, sysdeps.System{}, st.logf, p); err != nil {
		return "", err
	}
	return exec.LookPath(p.Command)
}

// stack is the children, their output prefixed with their names on out.
type stack struct {
	out io.Writer
	g   procs.Group
}

// logf writes a line of devstack's own among the children's.
func (st *stack) logf(format string, args ...any) {
	fmt.Fprintf(st.out, "%-10s | %s\n", "devstack", fmt.Sprintf(format, args...))
}

// start starts a child in the caller's environment (and so its .env),
// with its output on out. A child of a devstack that dies gets SIGTERM,
// so the servers and services still shut down cleanly.
func (st *stack) start(spec procs.Spec) (*procs.Proc, error) {
	spec.Inherit, spec.ParentDeath = true, syscall.SIGTERM
	spec.Output, spec.Prefix = st.out, fmt.Sprintf("%-10s | ", spec.Name)
	return st.g.Start(spec)
}

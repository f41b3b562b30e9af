package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/jobsys/jobs/pkg/procs"
	"github.com/jobsys/jobs/pkg/store"
	"github.com/jobsys/jobs/pkg/testenv"
)

// stack is what the benchmark measures: servers and services it started
// itself in a temporary directory, or a running stack (BENCH_USE_STACK=1)
// to which it can add only worker processes.
type stack struct {
	o   options
	dir string
	own bool

	beanstalkAddr string
	mongoURL      string
	mongoDB       string
	mongoColl     string
	managerURL    string
	notifierURL   string
	notifierPID   int
	feedDelay     time.Duration
	// workerBin is empty when worker processes cannot be started.
	workerBin string

	mongo *mongo.Client

	// g is the run's children; pprof maps those of a profiling build to
	// the URL they serve pprof on.
	g     procs.Group
	mu    sync.Mutex
	pprof map[*procs.Proc]string
}

// The main stack's database and collection when the benchmark starts its
// own.
const (
	benchDB   = "bench"
	benchColl = "results"
)

// startStack starts (or connects to) the stack. close must be called
// even when it fails.
func startStack(ctx context.Context, o options) (*stack, error) {
	dir, err := os.MkdirTemp("", "loadgen-")
	if err != nil {
		return nil, fmt.Errorf("temporary directory: %w", err)
	}
	s := &stack{o: o, dir: dir, own: !o.useStack}
	bin, err := filepath.Abs(o.bin)
	if err != nil {
		return s, fmt.Errorf("-bin %q: %w", o.bin, err)
	}
	s.o.bin = bin
	if _, err := os.Stat(filepath.Join(bin, "worker")); err == nil {
		s.workerBin = filepath.Join(bin, "worker")
	}

	if o.useStack {
		s.beanstalkAddr, s.mongoURL, s.mongoDB, s.mongoColl = o.beanstalkAddr, o.mongoURL, o.mongoDB, o.mongoColl
		s.managerURL, s.notifierURL, s.notifierPID, s.feedDelay = o.managerURL, o.notifierURL, o.notifierPID, o.feedDelay
		if err := s.connectMongo(ctx); err != nil {
			return s, err
		}
		health := []string{s.managerURL + "/healthz"}
		if o.needsNotifier() {
			health = append(health, s.notifierURL+"/healthz")
		}
		for _, u := range health {
			if err := waitUntil(ctx, nil, 5*time.Second, u, procs.HTTP(u)); err != nil {
				return s, err
			}
		}
		return s, waitUntil(ctx, nil, 5*time.Second, "beanstalkd at "+s.beanstalkAddr, procs.TCP(s.beanstalkAddr))
	}

	var missing []string
	for _, b := range []string{"manager", "worker", "notifier", "devmongo"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return s, fmt.Errorf("-bin %s lacks %s: run `make build` first", bin, strings.Join(missing, ", "))
	}
	s.mongoDB, s.mongoColl, s.feedDelay = benchDB, benchColl, o.feedDelay
	// The main beanstalkd runs as `make run` runs it: binlog, fsync at
	// most every 50ms.
	if _, s.beanstalkAddr, err = s.startBeanstalkd(ctx, "beanstalkd", 50); err != nil {
		return s, err
	}
	if err := s.startMongo(ctx); err != nil {
		return s, err
	}
	if err := s.connectMongo(ctx); err != nil {
		return s, err
	}
	if _, s.managerURL, err = s.startManager(ctx, "manager", s.beanstalkAddr, ""); err != nil {
		return s, err
	}
	if !o.needsNotifier() {
		return s, nil // no phase talks to the notifier
	}
	return s, s.startNotifier(ctx)
}

func (s *stack) connectMongo(ctx context.Context) error {
	c, err := store.Connect(s.mongoURL, "loadgen", 5*time.Second)
	if err != nil {
		return err
	}
	s.mongo = c
	if err := c.Ping(ctx, nil); err != nil {
		return fmt.Errorf("ping MongoDB at %s: %w", s.mongoURL, err)
	}
	return nil
}

// results is the collection the manager reads and the notifier tails.
func (s *stack) results() *mongo.Collection {
	return s.mongo.Database(s.mongoDB).Collection(s.mongoColl)
}

// close stops every child, newest first, and removes the temporary
// directory unless -keep was given.
func (s *stack) close() {
	if s.mongo != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = s.mongo.Disconnect(ctx)
		cancel()
	}
	s.g.StopAll()
	if s.o.keepData {
		fmt.Fprintf(os.Stderr, "loadgen: kept %s\n", s.dir)
		return
	}
	_ = os.RemoveAll(s.dir)
}

// stopProcs stops ps (newest first) and forgets them.
func (s *stack) stopProcs(ps ...*procs.Proc) { s.g.Stop(ps...) }

// start starts spec as a child of the run. A profiling build of a
// service or devmongo serves pprof on BENCH_PPROF_ADDR, a second listener
// that the child binds itself on a FreePort: the one port of a child not
// handed over or reported, asked for only by -pprof, where a port taken
// meanwhile costs a profile (fetchProfile logs it), not the run.
func (s *stack) start(spec procs.Spec) (*procs.Proc, error) {
	var pprofURL string
	if r := role(spec.Name); s.o.pprofDir != "" && (r == "manager" || r == "worker" || r == "notifier" || r == "devmongo") {
		port, err := procs.FreePort()
		if err != nil {
			return nil, err
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		spec.Env = append(slices.Clone(spec.Env), "BENCH_PPROF_ADDR="+addr)
		pprofURL = "http://" + addr
	}
	// Only what the child is told counts: the caller's BEANSTALK_* or a
	// .env in the working directory must not leak into what is measured.
	spec.Inherit, spec.Dir, spec.Grace = false, s.dir, stopGrace
	spec.LogFile = filepath.Join(s.dir, spec.Name+".log")
	p, err := s.g.Start(spec)
	if err != nil {
		return nil, err
	}
	if pprofURL != "" {
		s.mu.Lock()
		if s.pprof == nil {
			s.pprof = map[*procs.Proc]string{}
		}
		s.pprof[p] = pprofURL
		s.mu.Unlock()
	}
	return p, nil
}

// pprofURL is where p serves pprof, "" when it does not.
func (s *stack) pprofURL(p *procs.Proc) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pprof[p]
}

// startBeanstalkd starts a beanstalkd of the run's own; fsyncMS < 0 runs
// it without a binlog. It returns the process and its address.
func (s *stack) startBeanstalkd(ctx context.Context, name string, fsyncMS int) (*procs.Proc, string, error) {
	path, err := testenv.BeanstalkdPath()
	if err != nil {
		return nil, "", err
	}
	binlog := ""
	if fsyncMS >= 0 {
		binlog = filepath.Join(s.dir, name+"-binlog")
		if err := os.MkdirAll(binlog, 0o755); err != nil {
			return nil, "", err
		}
	}
	p, port, err := procs.StartOnFreePort(ctx, "127.0.0.1", 10*time.Second, func(port int) (*procs.Proc, error) {
		return s.start(procs.Spec{Name: name, Path: path, Args: procs.BeanstalkdArgs("127.0.0.1", port, binlog, fsyncMS, 0)})
	})
	if err != nil {
		return nil, "", err
	}
	return p, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), nil
}

// startMongo starts devmongo on a port it chooses and takes its URL from
// the line it prints.
func (s *stack) startMongo(ctx context.Context) error {
	data := filepath.Join(s.dir, "mongo")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return err
	}
	p, err := s.start(procs.Devmongo(filepath.Join(s.o.bin, "devmongo"), "127.0.0.1:0", data))
	if err != nil {
		return err
	}
	s.mongoURL, err = p.WaitReady(ctx, 30*time.Second)
	return err
}

// servers is what every service is told about the servers; coll is the
// results collection (the stack's own when empty).
func (s *stack) servers(beanstalkAddr, coll string) procs.Servers {
	return procs.Servers{BeanstalkAddr: beanstalkAddr, MongoURL: s.mongoURL, MongoDB: s.mongoDB, MongoCollection: cmp.Or(coll, s.mongoColl)}
}

// quiet is every service's logging: per-job logs would measure the log,
// not the service.
var quiet = map[string]string{"LOG_LEVEL": "warn", "LOG_FORMAT": "json"}

// startService starts svc as name, on a loopback port the benchmark binds
// and hands it, and returns it with its URL once /healthz answers.
func (s *stack) startService(ctx context.Context, svc procs.Service, name, bin string, servers procs.Servers, env map[string]string) (*procs.Proc, string, error) {
	spec := procs.ServiceSpec(svc, bin, servers, merge(quiet, env))
	spec.Name = name
	p, err := s.start(spec)
	if err != nil {
		return nil, "", err
	}
	u := procs.URL(p)
	return p, u, procs.WaitHealthy(ctx, p, u, 30*time.Second)
}

func merge(a, b map[string]string) map[string]string {
	out := maps.Clone(a)
	maps.Copy(out, b)
	return out
}

// startManager starts a manager against the beanstalkd at beanstalkAddr
// and results collection coll (the stack's own when empty), and returns
// it with its URL.
func (s *stack) startManager(ctx context.Context, name, beanstalkAddr, coll string) (*procs.Proc, string, error) {
	return s.startService(ctx, procs.Manager, name, filepath.Join(s.o.bin, "manager"), s.servers(beanstalkAddr, coll), nil)
}

func (s *stack) startNotifier(ctx context.Context) error {
	env := merge(procs.NotifierEnv(s.managerURL), map[string]string{
		"NOTIFIER_FEED_DELAY": s.feedDelay.String(),
		// Room for the fan-out's clients and the other phases' sockets.
		"NOTIFIER_MAX_CLIENTS": strconv.Itoa(s.o.clients + 1000),
	})
	p, u, err := s.startService(ctx, procs.Notifier, "notifier", filepath.Join(s.o.bin, "notifier"), s.servers(s.beanstalkAddr, ""), env)
	if p != nil {
		s.notifierURL, s.notifierPID = u, p.Pid()
	}
	return err
}

// errNoWorkerBinary: worker processes cannot be started.
var errNoWorkerBinary = errors.New("no worker binary in -bin")

// startWorkers starts n worker processes with one reserver each on tube,
// storing into collection coll (the stack's own when empty), and waits
// until they are healthy.
func (s *stack) startWorkers(ctx context.Context, n int, tube, coll string) ([]*procs.Proc, error) {
	if s.workerBin == "" {
		return nil, errNoWorkerBinary
	}
	var ps []*procs.Proc
	var urls []string
	for i := range n {
		env := merge(procs.WorkerEnv("bench-"+strconv.Itoa(i+1), tube), map[string]string{"WORKER_CONCURRENCY": "1"})
		spec := procs.ServiceSpec(procs.Worker, s.workerBin, s.servers(s.beanstalkAddr, coll), merge(quiet, env))
		spec.Name = fmt.Sprintf("worker-%s-%d", tube, i+1)
		p, err := s.start(spec)
		if err != nil {
			return ps, err
		}
		ps = append(ps, p)
		urls = append(urls, procs.URL(p))
	}
	// All start at once; then each is waited for.
	for i, p := range ps {
		if err := procs.WaitHealthy(ctx, p, urls[i], 30*time.Second); err != nil {
			return ps, err
		}
	}
	return ps, nil
}

// live returns the children that are running.
func (s *stack) live() []*procs.Proc {
	return slices.DeleteFunc(s.g.Procs(), (*procs.Proc).Exited)
}

// role is a process's kind: its name up to the first hyphen.
func role(name string) string {
	r, _, _ := strings.Cut(name, "-")
	return r
}

// cpuMeter measures the CPU the stack's processes, the benchmark itself
// and the rest of the machine use over an interval.
type cpuMeter struct {
	start   time.Time
	entries []meterEntry
	busy0   time.Duration
}

type meterEntry struct {
	role string
	pid  int
	t0   time.Duration
}

// cpuUse is CPU use in cores (1.0 = one core busy for the whole
// interval) by role; "loadgen" is the benchmark and "other" is everything
// else the machine ran.
type cpuUse map[string]float64

// meter starts measuring the processes running now.
func (s *stack) meter() *cpuMeter {
	m := &cpuMeter{start: time.Now()}
	add := func(role string, pid int) {
		if t, err := procs.CPUTime(pid); err == nil {
			m.entries = append(m.entries, meterEntry{role: role, pid: pid, t0: t})
		}
	}
	add("loadgen", os.Getpid())
	for _, p := range s.live() {
		add(role(p.Name()), p.Pid())
	}
	if !s.own && s.notifierPID > 0 {
		add("notifier", s.notifierPID)
	}
	m.busy0, _ = procs.MachineBusy()
	return m
}

// read returns the use since the meter started.
func (m *cpuMeter) read() cpuUse {
	wall := time.Since(m.start)
	u := cpuUse{}
	if wall <= 0 {
		return u
	}
	var ours time.Duration
	for _, e := range m.entries {
		t, err := procs.CPUTime(e.pid)
		if err != nil || t < e.t0 {
			continue // exited meanwhile: its share is lost
		}
		u[e.role] += round2(float64(t-e.t0) / float64(wall))
		ours += t - e.t0
	}
	if busy, err := procs.MachineBusy(); err == nil && m.busy0 > 0 {
		if other := busy - m.busy0 - ours; other > 0 {
			u["other"] = round2(float64(other) / float64(wall))
		}
	}
	return u
}

func round2(f float64) float64 { return float64(int64(f*100+0.5)) / 100 }

// String lists the biggest users, largest first.
func (u cpuUse) String() string {
	type kv struct {
		k string
		v float64
	}
	var all []kv
	for k, v := range u {
		if v >= 0.05 {
			all = append(all, kv{k, v})
		}
	}
	slices.SortFunc(all, func(a, b kv) int {
		if a.v != b.v {
			if a.v > b.v {
				return -1
			}
			return 1
		}
		return strings.Compare(a.k, b.k)
	})
	parts := make([]string, 0, len(all))
	for _, e := range all {
		parts = append(parts, fmt.Sprintf("%s %.2f", e.k, e.v))
	}
	return "cpu " + strings.Join(parts, ", ")
}

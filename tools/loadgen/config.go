package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jobsys/jobs/pkg/config"
	"github.com/jobsys/jobs/pkg/procs"
	"github.com/jobsys/jobs/pkg/queue"
)

// The phases, in the order they run.
const (
	phaseIngest     = "ingest"
	phaseDrain      = "drain"
	phaseE2E        = "e2e"
	phaseLookup     = "lookup"
	phaseFanout     = "fanout"
	phaseReplay     = "replay"
	phaseDurability = "durability"
)

var allPhases = []string{phaseIngest, phaseDrain, phaseE2E, phaseLookup, phaseFanout, phaseReplay, phaseDurability}

// options is everything a run is told, from flags and the environment.
type options struct {
	duration         time.Duration
	warmup           time.Duration
	jobs             int
	clients          int
	conc             int
	phases           []string
	out              string
	bin              string
	progress         string // auto, bar, lines, off
	keepData         bool
	pprofDir         string
	feedDelayDefault time.Duration
	// e2eRate is a fixed end-to-end rate; 0: half the 1-worker drain rate.
	e2eRate float64

	// useStack: measure a running stack instead of starting one.
	useStack      bool
	beanstalkAddr string
	mongoURL      string
	mongoDB       string
	mongoColl     string
	managerURL    string
	notifierURL   string
	notifierPID   int
	feedDelay     time.Duration
	tube          string
}

func (o options) has(phase string) bool { return slices.Contains(o.phases, phase) }

// needsNotifier says whether a phase talks to the notifier.
func (o options) needsNotifier() bool {
	return o.has(phaseE2E) || o.has(phaseFanout) || o.has(phaseReplay)
}

// parseOptions reads the flags and, with BENCH_USE_STACK=1, the stack's
// addresses. It reports every problem at once, naming the flag or
// variable.
func parseOptions(args []string, getenv func(string) string, stderr io.Writer) (options, error) {
	o := options{feedDelayDefault: 250 * time.Millisecond, feedDelay: 250 * time.Millisecond}
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, `Usage: loadgen [flags]

Measures the job system against floors taken on the same servers in the
same run, prints a table and writes the figures as JSON. It starts its own
stack from the binaries in -bin, or with BENCH_USE_STACK=1 measures the one
at BEANSTALK_HOST/BEANSTALK_PORT, MONGO_URL (MONGO_DB, MONGO_COLLECTION),
MANAGER_URL and NOTIFIER_URL (NOTIFIER_PID for its memory,
NOTIFIER_FEED_DELAY for the latency target, BENCH_TUBE for the tube its
workers watch).

Phases: %s

Flags:
`, strings.Join(allPhases, ", "))
		fs.PrintDefaults()
	}
	fs.DurationVar(&o.duration, "duration", 8*time.Second, "measuring window of each ingest, lookup and end-to-end run")
	fs.DurationVar(&o.warmup, "warmup", 500*time.Millisecond, "unmeasured warmup before each window")
	fs.IntVar(&o.jobs, "jobs", 5000, "jobs per drain run")
	fs.IntVar(&o.clients, "clients", 10000, "idle WebSocket clients for the fan-out")
	fs.IntVar(&o.conc, "c", 32, "concurrent connections for ingest and lookups (and their floors)")
	only := fs.String("only", strings.Join(allPhases, ","), "comma-separated phases to run")
	fs.StringVar(&o.out, "out", "artifacts/bench.json", "where to write the JSON figures")
	fs.StringVar(&o.bin, "bin", "bin", "directory holding manager, worker, notifier and devmongo")
	fs.StringVar(&o.progress, "progress", "auto", "progress on stderr: auto (a bar on a terminal, lines otherwise), bar, lines or off")
	fs.BoolVar(&o.keepData, "keep", false, "keep the temporary directory (servers' data and logs)")
	fs.Float64Var(&o.e2eRate, "e2e-rate", 0, "jobs per second of the end-to-end run (default: half the measured 1-worker drain rate), to compare runs at one rate")
	fs.StringVar(&o.pprofDir, "pprof", "", "save CPU profiles of the services during the measured runs here; needs the builds of tools/loadgen/pprof/build.sh")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	var errs []error
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments %q", fs.Args()))
	}
	if o.duration < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("-duration %s: must be at least 100ms", o.duration))
	}
	if o.warmup < 0 {
		errs = append(errs, fmt.Errorf("-warmup %s: must not be negative", o.warmup))
	}
	if o.jobs < 10 || o.jobs > 1_000_000 {
		errs = append(errs, fmt.Errorf("-jobs %d: must be from 10 to 1000000", o.jobs))
	}
	if o.clients < 1 || o.clients > 100_000 {
		errs = append(errs, fmt.Errorf("-clients %d: must be from 1 to 100000", o.clients))
	}
	if o.conc < 1 || o.conc > 1024 {
		errs = append(errs, fmt.Errorf("-c %d: must be from 1 to 1024", o.conc))
	}
	if o.e2eRate < 0 || o.e2eRate > 100_000 {
		errs = append(errs, fmt.Errorf("-e2e-rate %g: must be from 0 to 100000", o.e2eRate))
	}
	if o.out == "" {
		errs = append(errs, errors.New("-out: must not be empty"))
	}
	if !slices.Contains([]string{"auto", "bar", "lines", "off"}, o.progress) {
		errs = append(errs, fmt.Errorf("-progress %q: want auto, bar, lines or off", o.progress))
	}
	for p := range strings.SplitSeq(*only, ",") {
		p = strings.TrimSpace(p)
		switch {
		case p == "":
		case !slices.Contains(allPhases, p):
			errs = append(errs, fmt.Errorf("-only: unknown phase %q (known: %s)", p, strings.Join(allPhases, ", ")))
		case !slices.Contains(o.phases, p):
			o.phases = append(o.phases, p)
		}
	}
	if len(o.phases) == 0 {
		errs = append(errs, errors.New("-only: no phase named"))
	}
	// Run in the fixed order whatever order they were named in.
	slices.SortFunc(o.phases, func(a, b string) int { return slices.Index(allPhases, a) - slices.Index(allPhases, b) })

	if getenv("BENCH_USE_STACK") == "1" {
		o.useStack = true
		errs = append(errs, o.readStack(getenv)...)
	}
	return o, errors.Join(errs...)
}

// readStack reads the running stack's addresses with the services' own
// readers, so the variables mean what they mean to the services.
func (o *options) readStack(getenv func(string) string) []error {
	r := config.NewReader(getenv)
	o.beanstalkAddr = r.Beanstalk().Addr()
	m := r.Mongo()
	o.mongoURL, o.mongoDB, o.mongoColl = m.URL, m.DB, m.Collection
	o.managerURL = strings.TrimRight(r.String("http://127.0.0.1:"+strconv.Itoa(procs.ManagerPort), "MANAGER_URL"), "/")
	o.notifierURL = strings.TrimRight(r.String("http://127.0.0.1:"+strconv.Itoa(procs.NotifierPort), "NOTIFIER_URL"), "/")
	for _, key := range []string{"MANAGER_URL", "NOTIFIER_URL"} {
		v := r.String("", key)
		if v == "" {
			continue
		}
		if u, err := url.Parse(v); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			r.Failf(key, "%q: want http://host:port", v)
		}
	}
	o.notifierPID = int(r.Int("NOTIFIER_PID", 0, 1, 1<<22))
	o.feedDelay = r.Duration("NOTIFIER_FEED_DELAY", o.feedDelayDefault, time.Millisecond)
	o.tube = r.String(queue.DefaultTube, "BENCH_TUBE")
	if err := queue.ValidateTube(o.tube); err != nil {
		r.Failf("BENCH_TUBE", "%v", err)
	}
	if err := r.Err(); err != nil {
		return []error{err}
	}
	return nil
}

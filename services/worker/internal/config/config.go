// Package config is the worker's settings: one struct read from the
// environment and an optional .env file, with defaults, validated so that
// every bad value is reported at once, naming its variable.
package config

import (
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jobsys/jobs/pkg/config"
	"github.com/jobsys/jobs/pkg/queue"

	"github.com/jobsys/jobs/services/worker/internal/handler"
)

// Config is everything the worker reads from its environment.
type Config struct {
	config.Service

	// Concurrency is how many reservers run, each on its own connection
	// (WORKER_CONCURRENCY).
	Concurrency int
	// Tubes are watched by every reserver (WORKER_TUBES).
	Tubes []string
	// MaxAttempts is how many deliveries a job whose handler fails gets
	// before it is buried (WORKER_MAX_ATTEMPTS).
	MaxAttempts int
	// WorkDelay is the simulated work time (WORK_DELAY).
	WorkDelay handler.Delay
	// Handlers maps a tube to a built-in handler name or to
	// "exec:/absolute/path" for a program; other tubes get "md5"
	// (WORKER_HANDLERS).
	Handlers map[string]string
	// ExecTimeout bounds one run of a program handler; 0 leaves the
	// job's TTR as the only bound (WORKER_EXEC_TIMEOUT).
	ExecTimeout time.Duration
	// ExecMaxOutput is the most stdout a program handler may write, in
	// bytes (WORKER_EXEC_MAX_OUTPUT).
	ExecMaxOutput int
	// ResultsTTL is how long results and failure records are kept; 0
	// keeps them forever (RESULTS_TTL).
	ResultsTTL time.Duration

	// MetricsHost and MetricsPort are where /healthz and /metrics listen;
	// port 0 picks a free one.
	MetricsHost string
	MetricsPort int

	// ShutdownGrace is how long in-flight jobs may run after SIGTERM.
	ShutdownGrace time.Duration
	// RetryBase and RetryMax bound the release backoff.
	RetryBase time.Duration
	RetryMax  time.Duration

	// StoreTimeout is how long a MongoDB operation waits for an
	// unreachable server before it fails and the job is released
	// (WORKER_STORE_TIMEOUT).
	StoreTimeout time.Duration

	// WorkerID is stored in each result as "worker".
	WorkerID string
}

// Defaults that are not zero values.
const (
	DefaultConcurrency   = 1
	MaxConcurrency       = 1024
	DefaultMaxAttempts   = 5
	DefaultMetricsPort   = 8084
	DefaultShutdownGrace = 30 * time.Second
	DefaultRetryBase     = time.Second
	DefaultRetryMax      = 5 * time.Minute
	DefaultStoreTimeout  = 5 * time.Second
	MaxExecOutput        = 1 << 30
	// MinResultsTTL keeps a typo ("60" meant as minutes) from deleting
	// results as they are written.
	MinResultsTTL = time.Minute
)

// Load reads the configuration from getenv and then the .env file in the
// working directory (the real environment wins). terminal chooses the
// default log format. defaultTubes, when given, are watched when
// WORKER_TUBES is unset (a program with its own handlers watches their
// tubes); otherwise the default tube is. The error names every bad
// variable.
func Load(getenv config.Getenv, terminal bool, defaultTubes ...string) (Config, error) {
	if len(defaultTubes) == 0 {
		defaultTubes = []string{queue.DefaultTube}
	}
	r, shared, err := config.Open(getenv, terminal)
	if err != nil {
		return Config{}, err
	}
	c := Config{
		Service:       shared,
		Concurrency:   int(r.Int("WORKER_CONCURRENCY", DefaultConcurrency, 1, MaxConcurrency)),
		Tubes:         r.List("WORKER_TUBES", defaultTubes),
		MaxAttempts:   int(r.Int("WORKER_MAX_ATTEMPTS", DefaultMaxAttempts, 1, math.MaxInt32)),
		MetricsHost:   r.String("", "WORKER_METRICS_HOST"),
		MetricsPort:   r.Port("WORKER_METRICS_PORT", DefaultMetricsPort),
		ShutdownGrace: r.Duration("WORKER_SHUTDOWN_GRACE", DefaultShutdownGrace, 0),
		RetryBase:     r.Duration("WORKER_RETRY_BASE", DefaultRetryBase, 0),
		RetryMax:      r.Duration("WORKER_RETRY_MAX", DefaultRetryMax, 0),
		StoreTimeout:  r.Duration("WORKER_STORE_TIMEOUT", DefaultStoreTimeout, 100*time.Millisecond),
		WorkerID:      r.String(defaultWorkerID(), "WORKER_ID"),
		ExecTimeout:   r.Duration("WORKER_EXEC_TIMEOUT", 0, 0),
		ExecMaxOutput: int(r.Int("WORKER_EXEC_MAX_OUTPUT", handler.DefaultMaxOutput, 1, MaxExecOutput)),
		ResultsTTL:    r.Duration("RESULTS_TTL", 0, 0),
	}
	if c.ResultsTTL > 0 && c.ResultsTTL < MinResultsTTL {
		r.Failf("RESULTS_TTL", "%s is less than %s; 0 keeps results forever", c.ResultsTTL, MinResultsTTL)
	}
	for _, t := range c.Tubes {
		if err := queue.ValidateTube(t); err != nil {
			r.Failf("WORKER_TUBES", "%v", err)
		}
	}
	slices.Sort(c.Tubes)
	c.Tubes = slices.Compact(c.Tubes)
	if c.WorkDelay, err = handler.ParseDelay(r.String("", "WORK_DELAY")); err != nil {
		r.Failf("WORK_DELAY", "%v", err)
	}
	c.Handlers = readHandlers(r, r.String("", "WORKER_HANDLERS"))
	if c.RetryMax < c.RetryBase {
		r.Failf("WORKER_RETRY_MAX", "%s is less than WORKER_RETRY_BASE %s", c.RetryMax, c.RetryBase)
	}
	if err := r.Err(); err != nil {
		return Config{}, fmt.Errorf("worker configuration: %w", err)
	}
	return c, nil
}

// readHandlers parses "tube:handler,tube:handler", where a handler is a
// built-in's name or "exec:" and a program's absolute path.
func readHandlers(r *config.Reader, v string) map[string]string {
	const key = "WORKER_HANDLERS"
	m := map[string]string{}
	for _, pair := range strings.Split(v, ",") {
		pair = strings.TrimSpace(pair)
		if pair == "" {
			continue
		}
		tube, name, ok := strings.Cut(pair, ":")
		tube, name = strings.TrimSpace(tube), strings.TrimSpace(name)
		if !ok || name == "" {
			r.Failf(key, "%q is not tube:handler", pair)
			continue
		}
		if err := queue.ValidateTube(tube); err != nil {
			r.Failf(key, "%q: %v", pair, err)
			continue
		}
		if path, ok := strings.CutPrefix(name, handler.ExecPrefix); ok {
			if err := handler.CheckProgram(path); err != nil {
				r.Failf(key, "tube %q: %v", tube, err)
				continue
			}
		} else if _, known := handler.Builtin(name); !known {
			r.Failf(key, "%q: unknown handler %q (known: %s, or exec:/path/to/program)", pair, name, strings.Join(handler.Names(), ", "))
			continue
		}
		if old, dup := m[tube]; dup && old != name {
			r.Failf(key, "tube %q is given two handlers, %q and %q", tube, old, name)
			continue
		}
		m[tube] = name
	}
	return m
}

func defaultWorkerID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "worker"
	}
	return host + ":" + strconv.Itoa(os.Getpid())
}

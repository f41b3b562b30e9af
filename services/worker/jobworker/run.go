package jobworker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	pkgconfig "github.com/jobsys/jobs/pkg/config"
	"github.com/jobsys/jobs/pkg/store"

	"github.com/jobsys/jobs/services/worker/internal/config"
	"github.com/jobsys/jobs/services/worker/internal/handler"
	"github.com/jobsys/jobs/services/worker/internal/worker"
)

// run is the whole service: it reads the configuration from getenv, logs
// to stdout, serves /healthz and /metrics, and works jobs with mux's
// handlers and WORKER_HANDLERS' until ctx is cancelled.
func run(ctx context.Context, mux *handler.Mux, getenv func(string) string, stdout io.Writer) error {
	cfg, err := config.Load(getenv, pkgconfig.IsTerminal(stdout), mux.Tubes()...)
	if err != nil {
		return err
	}
	log := pkgconfig.NewLogger(stdout, cfg.Log).With("service", "worker")
	handlers, err := handlersOf(mux, cfg)
	if err != nil {
		return err
	}
	if t := unwatched(handlers, cfg.Tubes); len(t) > 0 {
		log.Warn("handlers are registered for tubes that WORKER_TUBES does not watch", "tubes", t)
	}
	// The store timeout bounds server selection, so a write to an
	// unreachable MongoDB fails (and its job is released) instead of
	// waiting the driver's default 30 seconds.
	client, err := store.Connect(cfg.Mongo.URL, "jobs-worker", cfg.StoreTimeout)
	if err != nil {
		return err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), cfg.StoreTimeout)
		defer cancel()
		_ = client.Disconnect(dctx)
	}()
	results := store.NewResults(client, cfg.Mongo.DB, cfg.Mongo.Collection, store.WithServer(store.Server(cfg.Mongo.Server)))
	failures := results.Failures()

	reg := prometheus.NewRegistry()
	metrics := worker.NewMetrics(reg)
	addr := net.JoinHostPort(cfg.MetricsHost, strconv.Itoa(cfg.MetricsPort))
	ln, err := pkgconfig.Listen(getenv, addr)
	if err != nil {
		return fmt.Errorf("listen on %s (WORKER_METRICS_HOST, WORKER_METRICS_PORT): %w", addr, err)
	}
	httpMux := http.NewServeMux()
	httpMux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok\n")
	})
	httpMux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	srv := &http.Server{Handler: httpMux, ReadHeaderTimeout: 5 * time.Second}

	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "err", err)
		}
	})
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info("metrics listening", "addr", ln.Addr().String())

	// The worker starts, and keeps its jobs waiting, while MongoDB is
	// down; Prepare makes the indexes when it answers.
	wg.Go(func() {
		if results.Prepare(ctx, 2*cfg.StoreTimeout, log) == nil {
			_ = results.Maintain(ctx, store.MaintainOptions{TTL: cfg.ResultsTTL, Try: 2 * cfg.StoreTimeout, Log: log})
		}
	})

	w := worker.New(worker.Config{
		Addr:          cfg.Beanstalk.Addr(),
		Tubes:         cfg.Tubes,
		Concurrency:   cfg.Concurrency,
		MaxAttempts:   cfg.MaxAttempts,
		Retry:         worker.Backoff{Base: cfg.RetryBase, Max: cfg.RetryMax},
		ShutdownGrace: cfg.ShutdownGrace,
		WorkerID:      cfg.WorkerID,
		SaveTimeout:   2 * cfg.StoreTimeout,
		Handlers:      handlers,
		Store:         results,
		Failures:      failures,
		Metrics:       metrics,
		Logger:        log,
	})
	log.Info("worker started", "worker_id", cfg.WorkerID, "beanstalk", cfg.Beanstalk.Addr(),
		"tubes", strings.Join(cfg.Tubes, ","), "concurrency", cfg.Concurrency,
		"max_attempts", cfg.MaxAttempts, "work_delay", cfg.WorkDelay.String(), "handlers", describe(handlers, cfg))
	err = w.Run(ctx)
	// Close the store's open journal batches (devmongo), so that other
	// processes read this one's last results at once.
	fctx, cancel := context.WithTimeout(context.Background(), 2*cfg.StoreTimeout)
	defer cancel()
	if ferr := results.Flush(fctx); ferr != nil {
		log.Warn("closing the results journal failed; readers repair it after a minute", "err", ferr)
	}
	if err != nil {
		return err
	}
	log.Info("worker stopped")
	return nil
}

// handlersOf returns mux with WORKER_HANDLERS' handlers added, and md5 as
// the default when mux has none. A tube given a handler by both is a
// configuration error.
func handlersOf(mux *handler.Mux, cfg config.Config) (*handler.Mux, error) {
	out := mux.Clone()
	exec := handler.ExecOptions{Timeout: cfg.ExecTimeout, MaxOutput: cfg.ExecMaxOutput, Env: handler.SafeEnv(os.Environ())}
	tubes := slices.Sorted(maps.Keys(cfg.Handlers))
	for _, tube := range tubes {
		if out.Has(tube) {
			return nil, fmt.Errorf("WORKER_HANDLERS: tube %q has a handler in the program already", tube)
		}
		h, err := handler.FromSpec(cfg.Handlers[tube], cfg.WorkDelay, exec)
		if err != nil {
			return nil, fmt.Errorf("WORKER_HANDLERS: tube %q: %w", tube, err)
		}
		out.Handle(tube, h)
	}
	if !out.HasDefault() {
		md5, _ := handler.FromSpec(handler.MD5, cfg.WorkDelay, exec)
		out.HandleDefault(md5)
	}
	return out, nil
}

// unwatched lists the tubes with a handler that the worker does not
// watch: probably a mistake, worth a warning.
func unwatched(mux *handler.Mux, watched []string) []string {
	var out []string
	for _, t := range mux.Tubes() {
		if !slices.Contains(watched, t) {
			out = append(out, t)
		}
	}
	return out
}

// describe names each watched tube's handler for the start-up log.
func describe(mux *handler.Mux, cfg config.Config) string {
	parts := make([]string, 0, len(cfg.Tubes))
	for _, t := range cfg.Tubes {
		name, ok := cfg.Handlers[t]
		switch {
		case ok:
		case mux.Has(t):
			name = "go"
		default:
			name = handler.MD5 + " (default)"
		}
		parts = append(parts, t+":"+name)
	}
	return strings.Join(parts, ",")
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
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
// to stdout, serves /healthz and /metrics, and works jobs until ctx is
// cancelled.
func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	cfg, err := config.Load(getenv, pkgconfig.IsTerminal(stdout))
	if err != nil {
		return err
	}
	log := pkgconfig.NewLogger(stdout, cfg.Log).With("service", "worker")
	if t := cfg.UnwatchedHandlerTubes(); len(t) > 0 {
		log.Warn("WORKER_HANDLERS names tubes that WORKER_TUBES does not watch", "tubes", t)
	}

	handlers, err := handler.Builtins(cfg.Handlers, cfg.WorkDelay)
	if err != nil {
		return fmt.Errorf("WORKER_HANDLERS: %w", err)
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

	reg := prometheus.NewRegistry()
	metrics := worker.NewMetrics(reg)
	addr := net.JoinHostPort(cfg.MetricsHost, strconv.Itoa(cfg.MetricsPort))
	ln, err := pkgconfig.Listen(getenv, addr)
	if err != nil {
		return fmt.Errorf("listen on %s (WORKER_METRICS_HOST, WORKER_METRICS_PORT): %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}

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
	wg.Go(func() { _ = results.Prepare(ctx, 2*cfg.StoreTimeout, log) })

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
		Metrics:       metrics,
		Logger:        log,
	})
	log.Info("worker started", "worker_id", cfg.WorkerID, "beanstalk", cfg.Beanstalk.Addr(),
		"tubes", strings.Join(cfg.Tubes, ","), "concurrency", cfg.Concurrency,
		"max_attempts", cfg.MaxAttempts, "work_delay", cfg.WorkDelay.String())
	if err := w.Run(ctx); err != nil {
		return err
	}
	log.Info("worker stopped")
	return nil
}

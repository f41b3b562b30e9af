package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	pkgconfig "github.com/jobsys/jobs/pkg/config"
	"github.com/jobsys/jobs/pkg/queue"
	"github.com/jobsys/jobs/pkg/store"
	"github.com/jobsys/jobs/services/manager/internal/api"
	"github.com/jobsys/jobs/services/manager/internal/config"
	"github.com/jobsys/jobs/services/manager/internal/fence"
	"github.com/jobsys/jobs/services/manager/internal/idem"
)

// shutdownTimeout is how long in-flight requests get to finish.
const shutdownTimeout = 10 * time.Second

// shutdownDrain is how long the manager keeps answering, with
// "Connection: close" and a failing /readyz, before it stops listening.
const shutdownDrain = time.Second

// run is the manager: it serves the API until ctx ends, then finishes the
// requests in flight and returns nil.
func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	return serve(ctx, getenv, stdout, nil)
}

// serve is run; ready, when set, is told the address it listens on.
func serve(ctx context.Context, getenv func(string) string, stdout io.Writer, ready func(net.Addr)) error {
	cfg, err := config.Load(getenv, pkgconfig.IsTerminal(stdout))
	if err != nil {
		return err
	}
	log := pkgconfig.NewLogger(stdout, cfg.Log)

	pool := queue.NewPool(queue.PoolConfig{Addr: cfg.Beanstalk.Addr()})
	defer pool.Close()
	if err := checkJobSize(ctx, pool, cfg.MaxJobSize, log); err != nil {
		return err
	}

	client, err := store.Connect(cfg.Mongo.URL, "jobs-manager", 2*time.Second)
	if err != nil {
		return err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = client.Disconnect(dctx)
	}()
	results := store.NewResults(client, cfg.Mongo.DB, cfg.Mongo.Collection, store.WithServer(store.Server(cfg.Mongo.Server)))

	reg := prometheus.NewRegistry()
	fenced := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "manager_id_fences_total",
		Help: "New beanstalkd processes whose job ids this manager moved past every id handed out (restarts without a binlog).",
	})
	reg.MustRegister(fenced)
	f := fence.New(pool, results, client.Database(cfg.Mongo.DB).Collection(cfg.Mongo.Collection+"_id_fence"), log)
	f.OnFence = fenced.Inc
	// The fence sees every queue connection from here on before it is
	// used; the one checkJobSize made is dropped.
	pool.SetOnConnect(f.OnConnect)
	_ = pool.Close()
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	if _, err := f.Sync(sctx); err != nil {
		log.Warn("could not fence beanstalkd's job ids at start; POST answers 503 until it can", "err", err)
	}
	cancel()

	keys := idem.New(client, cfg.Mongo.DB, idem.Options{Window: cfg.IdempotencyWindow, Logger: log, Server: store.Server(cfg.Mongo.Server)})
	handler := api.New(api.Deps{
		Queue: pool, Enqueuer: f, Results: results, Keys: keys, Logger: log, Registry: reg,
		Admin: pool, Lister: results, Failures: results.Failures(),
		Config: api.Config{
			MaxJobSize: cfg.MaxJobSize, DefaultTTR: cfg.DefaultTTR, CORSOrigins: cfg.CORSOrigins,
			Token: cfg.APIToken, ProtectReads: cfg.ProtectReads,
			RateLimit: cfg.RateLimit, TrustedProxies: cfg.TrustedProxies,
		},
	})
	var draining atomic.Bool
	srv := api.NewServer(drain(handler, &draining), log)
	ln, err := pkgconfig.Listen(getenv, cfg.Addr())
	if err != nil {
		return fmt.Errorf("listen on %s (MANAGER_LISTEN_HOST, MANAGER_LISTEN_PORT): %w", cfg.Addr(), err)
	}
	log.Info("manager listening", "addr", ln.Addr().String(), "beanstalkd", cfg.Beanstalk.Addr(),
		"mongo_db", cfg.Mongo.DB, "mongo_collection", cfg.Mongo.Collection, "auth", cfg.APIToken != "")
	if ready != nil {
		ready(ln.Addr())
	}

	// The watcher outlives ctx until the server has stopped, so it gets
	// a context of its own.
	wctx, stopWatch := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stopWatch()
	wg.Go(func() { keys.Maintain(wctx, results.Server, time.Minute) })
	wg.Go(func() {
		f.Watch(wctx, fence.WatchOptions{
			OnUp: func(stats map[string]string) {
				if n, err := strconv.Atoi(stats["max-job-size"]); err == nil && n < cfg.MaxJobSize {
					log.Error("MAX_JOB_SIZE is larger than beanstalkd's max-job-size: large jobs will be refused with 413",
						"max_job_size", cfg.MaxJobSize, "beanstalkd_max_job_size", n)
				}
			},
		})
	})

	served := make(chan error, 1)
	// The listener turns net/http's own text errors (431, 400) into JSON.
	go func() { served <- srv.Serve(api.JSONErrors(ln, api.MaxHeaderBytes)) }()
	select {
	case err := <-served:
		return fmt.Errorf("serve HTTP: %w", err)
	case <-ctx.Done():
	}
	// Drain first: answers now carry "Connection: close", so clients stop
	// reusing their connections before Shutdown closes the idle ones. A
	// client that sent a request on a connection at the moment it was
	// closed would otherwise see a reset.
	log.Info("shutting down: draining connections", "drain", shutdownDrain.String())
	draining.Store(true)
	select {
	case err := <-served:
		return fmt.Errorf("serve HTTP: %w", err)
	case <-time.After(shutdownDrain):
	}
	log.Info("shutting down: finishing requests in flight", "timeout", shutdownTimeout.String())
	dctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(dctx); err != nil {
		log.Warn("requests still running at the shutdown deadline were cut off", "err", err)
		_ = srv.Close()
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve HTTP: %w", err)
	}
	log.Info("manager stopped")
	return nil
}

// checkJobSize refuses a MAX_JOB_SIZE that beanstalkd would refuse. An
// unreachable beanstalkd is only a warning: the manager answers 503 until
// it comes.
func checkJobSize(ctx context.Context, pool *queue.Pool, max int, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	n, err := pool.MaxJobSize(ctx)
	if err != nil {
		log.Warn("beanstalkd is not answering at start; starting anyway and answering 503 until it does",
			"beanstalkd", pool.Addr(), "err", err)
		return nil
	}
	if max > n {
		return fmt.Errorf("MAX_JOB_SIZE=%d is larger than the max-job-size of %d bytes of beanstalkd at %s: lower MAX_JOB_SIZE or start beanstalkd with -z %d",
			max, n, pool.Addr(), max)
	}
	return nil
}

var (
	_ api.Enqueuer       = (*fence.Fence)(nil)
	_ api.Results        = (*store.Results)(nil)
	_ api.Keys           = (*idem.Keys)(nil)
	_ api.Lister         = (*store.Results)(nil)
	_ api.Admin          = (*queue.Pool)(nil)
	_ api.FailureRecords = (*store.Failures)(nil)
	_ fence.Store        = (*store.Results)(nil)
)

// drain wraps h so that, once draining is set, every answer closes its
// connection and /readyz fails, telling load balancers to send no more.
func drain(h http.Handler, draining *atomic.Bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !draining.Load() {
			h.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Connection", "close")
		if r.URL.Path == "/readyz" {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-Content-Type-Options", "nosniff")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"status":"draining"}` + "\n"))
			return
		}
		h.ServeHTTP(w, r)
	})
}

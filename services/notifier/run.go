package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	pkgconfig "github.com/jobsys/jobs/pkg/config"
	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/queue"
	"github.com/jobsys/jobs/pkg/store"
	"github.com/jobsys/jobs/web"

	"github.com/jobsys/jobs/services/notifier/internal/config"
	"github.com/jobsys/jobs/services/notifier/internal/feed"
	"github.com/jobsys/jobs/services/notifier/internal/hub"
	"github.com/jobsys/jobs/services/notifier/internal/metrics"
	"github.com/jobsys/jobs/services/notifier/internal/server"
	"github.com/jobsys/jobs/services/notifier/internal/tracker"
)

// shutdownTimeout bounds closing the clients and the server.
const shutdownTimeout = 10 * time.Second

// run starts the notifier and serves until ctx ends or a part fails.
func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	return serve(ctx, getenv, stdout, nil)
}

// serve is run; ready, when set, is told the address it listens on, so a
// test can give it port 0.
func serve(ctx context.Context, getenv func(string) string, stdout io.Writer, ready func(net.Addr)) error {
	cfg, err := config.Load(getenv, pkgconfig.IsTerminal(stdout))
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	log := pkgconfig.NewLogger(stdout, cfg.Log).With("service", "notifier")

	client, err := store.Connect(cfg.Mongo.URL, "notifier", 5*time.Second)
	if err != nil {
		return err
	}
	defer func() { _ = client.Disconnect(context.Background()) }()
	results := store.NewResults(client, cfg.Mongo.DB, cfg.Mongo.Collection, store.WithServer(store.Server(cfg.Mongo.Server)))
	pool := queue.NewPool(queue.PoolConfig{Addr: cfg.Beanstalk.Addr()})
	defer pool.Close()
	m := metrics.New()
	conns := server.NewConns(cfg.MaxPending, m)

	h := hub.New(hub.Config{
		Store:           results,
		Metrics:         m,
		Logger:          log,
		ReplayLimit:     cfg.ReplayLimit,
		MaxReplays:      cfg.MaxReplays,
		RecentBytes:     cmp.Or(cfg.ReplayMemory, -1), // 0: none
		MaxWatches:      cfg.MaxWatches,
		MaxJobs:         cfg.MaxClientWatches,
		Lookback:        cfg.Lookback,
		MaxClients:      cfg.MaxClients,
		Buffer:          cfg.ClientBuffer,
		WriteTimeout:    cfg.WriteTimeout,
		PingInterval:    cfg.PingInterval,
		Admitted:        conns.Admitted,
		SkipOriginCheck: true, // server checks origins for /ws and /events alike
	})
	tr := tracker.New(tracker.Config{
		Queue: pool, Results: countedLookups{results, m}, Hub: h, Logger: log,
		StoreDelay: cfg.FeedDelay, StatsTubes: cfg.StatsTubes,
	})
	f := feed.New(feed.Config{
		Mode:         cfg.Mode,
		PollInterval: cfg.FeedDelay,
		PollLookback: cfg.Lookback,
		ID:           cfg.ID,
		Store:        results,
		Opener:       feed.MongoOpener{Coll: results.Collection()},
		State:        feed.MongoState{Coll: client.Database(cfg.Mongo.DB).Collection(feed.StateCollection)},
		Logger:       log,
		OnMode:       m.SetMode,
	})
	handler, err := server.New(cfg, server.Deps{
		Hub: h, Feed: f, Mongo: results, Beanstalk: pool, Metrics: m, Logger: log, Board: web.Static(),
	})
	if err != nil {
		return err
	}

	ln, err := pkgconfig.Listen(getenv, cfg.Addr())
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Addr(), err)
	}
	srv := server.HTTPServer(handler, conns, log)
	log.Info("notifier listening", "addr", ln.Addr().String(), "mode", cfg.Mode, "notifier_id", cfg.ID)
	if ready != nil {
		ready(ln.Addr())
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	failed := make(chan error, 3)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			failed <- fmt.Errorf("serve http: %w", err)
		}
	})
	wg.Go(func() {
		if err := f.Run(ctx, h.Completed); err != nil {
			failed <- err
		}
	})
	wg.Go(func() { _ = tr.Run(ctx) })
	wg.Go(func() { _ = results.Prepare(ctx, 10*time.Second, log) })
	wg.Go(func() {
		select {
		case <-f.Started(): // from now on the feed delivers every new result
			_ = h.Prime(ctx)
		case <-ctx.Done():
		}
	})

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case runErr = <-failed:
		log.Error("stopping", "err", runErr)
	}
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer scancel()
	if err := h.Shutdown(sctx); err != nil {
		log.Warn("close clients", "err", err)
	}
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("stop http server", "err", err)
	}
	cancel() // the feed saves its resume token as it stops
	wg.Wait()
	log.Info("stopped")
	return runErr
}

// countedLookups counts the tracker's store lookups of jobs gone from
// the queue in the metrics.
type countedLookups struct {
	r *store.Results
	m *metrics.Metrics
}

func (c countedLookups) FindMany(ctx context.Context, ids []uint64) (map[uint64]job.Result, error) {
	c.m.StoreLookups.Inc()
	c.m.StoreLookupJobs.Add(float64(len(ids)))
	return c.r.FindMany(ctx, ids)
}

// Command devmongo runs FerretDB with its SQLite backend as a small,
// MongoDB-compatible server for development and tests, with MongoDB's
// change streams served by a front of its own (internal/front): the
// front takes the connections, forwards every command to FerretDB, and
// answers change streams from the writes it saw acknowledged, as the
// primary of a one-member replica set (rs0). README.md says what it
// implements and how it differs from MongoDB.
//
// It prints one line, "listening <uri>", once the listener is bound, so
// a harness can start it on port 0.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/jobsys/jobs/tools/devmongo/internal/front"
	"github.com/jobsys/jobs/tools/devmongo/internal/idindex"
)

// indexEvery is how often new tables get their _id lookup index
// (internal/idindex); a table is small, and a scan of it cheap, for the
// first second of its life.
const indexEvery = time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "devmongo:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("devmongo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", envOr("DEVMONGO_LISTEN", "127.0.0.1:27017"), "TCP address to serve the MongoDB wire protocol on (port 0 picks a free one)")
	dir := fs.String("data", envOr("DEVMONGO_DATA", "data/mongo"), "directory for the SQLite files, one per database")
	level := fs.String("log-level", envOr("DEVMONGO_LOG_LEVEL", "error"), "log level: debug, info, warn or error (FerretDB logs every refused command at warn)")
	replSet := fs.String("replset", envOr("DEVMONGO_REPLSET", "rs0"), `replica set name hello announces; "" answers as a standalone server, without change streams`)
	history := fs.Int("history", 100_000, "change events kept in memory for resuming streams (also at most 64 MiB); older resume points get ChangeStreamHistoryLost")
	bare := fs.Bool("bare", false, "serve FerretDB itself on -listen, without the front: no change streams (to measure what the front costs)")
	if err := fs.Parse(args); err != nil {
		return err
	}

	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	if *history < 1 {
		return errors.New("-history: must be at least 1")
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))

	abs, err := filepath.Abs(*dir)
	if err != nil {
		return fmt.Errorf("data directory %q: %w", *dir, err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	// Index the tables there are before serving them, then new ones as
	// they come.
	ix := idindex.New(abs, logger.With("component", "idindex"))
	if err := ix.Pass(ctx); err != nil {
		return fmt.Errorf("index the _id lookups of %s: %w", abs, err)
	}
	ctx, cancelIndexer := context.WithCancel(ctx)
	indexerDone := make(chan struct{})
	go func() { defer close(indexerDone); ix.Run(ctx, indexEvery) }()
	defer func() { cancelIndexer(); <-indexerDone }()

	if *bare {
		return runBare(ctx, *listen, abs, logger, stdout)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *listen, err)
	}
	defer ln.Close()

	// FerretDB itself listens on a loopback port of its own, behind the
	// front.
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: "127.0.0.1:0"},
		Logger:    logger.With("component", "ferretdb"),
		Handler:   "sqlite",
		SQLiteURL: "file:" + abs + "/",
	})
	if err != nil {
		return fmt.Errorf("start FerretDB: %w", err)
	}
	// FerretDB has a context of its own: it is stopped last, once the
	// front and the lookup client have closed their connections to it.
	// Stopped with connections open, it gives them a few seconds to go
	// (ctxutil.WithDelay), which held every stop up by three seconds.
	fctx, stopFerret := context.WithCancel(context.WithoutCancel(ctx))
	defer stopFerret()
	ferretDone := make(chan error, 1)
	go func() { ferretDone <- f.Run(fctx) }()
	inner := f.MongoDBURI()
	upstream := inner[len("mongodb://") : len(inner)-1]

	lookup, err := mongo.Connect(options.Client().ApplyURI(inner).SetAppName("devmongo-front").SetServerSelectionTimeout(10 * time.Second))
	if err != nil {
		return fmt.Errorf("connect to FerretDB: %w", err)
	}
	disconnect := func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = lookup.Disconnect(dctx)
	}
	defer disconnect()

	fr := front.New(front.Config{
		Upstream:      upstream,
		Lookup:        lookup,
		Advertise:     advertise(ln.Addr().(*net.TCPAddr)),
		ReplSet:       *replSet,
		MaxEvents:     *history,
		MaxEventBytes: 64 << 20,
		Logger:        logger.With("component", "front"),
	})
	ctx, stopFront := context.WithCancel(ctx)
	defer stopFront()
	frontDone := make(chan error, 1)
	go func() { frontDone <- fr.Serve(ctx, ln) }()

	fmt.Fprintf(stdout, "listening mongodb://%s/\n", advertise(ln.Addr().(*net.TCPAddr)))
	// Stop in order: the front (it closes the clients' connections and
	// its own to FerretDB), the lookup client, then FerretDB.
	select {
	case err = <-frontDone:
		disconnect()
		stopFerret()
		<-ferretDone
	case err = <-ferretDone:
		stopFront()
		<-frontDone
	}
	return err
}

// runBare serves FerretDB alone on listen.
func runBare(ctx context.Context, listen, dir string, logger *slog.Logger, stdout io.Writer) error {
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: listen},
		Logger:    logger.With("component", "ferretdb"),
		Handler:   "sqlite",
		SQLiteURL: "file:" + dir + "/",
	})
	if err != nil {
		return fmt.Errorf("start FerretDB on %s: %w", listen, err)
	}
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	fmt.Fprintf(stdout, "listening %s\n", f.MongoDBURI())
	return <-done
}

// advertise is the address clients reach a listener on: loopback for a
// listener on every interface.
func advertise(a *net.TCPAddr) string {
	ip := a.IP
	if ip == nil || ip.IsUnspecified() {
		ip = net.IPv4(127, 0, 0, 1)
	}
	return net.JoinHostPort(ip.String(), fmt.Sprint(a.Port))
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

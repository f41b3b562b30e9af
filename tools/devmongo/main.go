// Command devmongo runs FerretDB with its SQLite backend as a small,
// MongoDB-compatible server for development and tests.
//
// It serves the MongoDB wire protocol, so the official driver works
// unchanged, but it has no change streams and no replica set: the notifier
// falls back to polling against it. It prints one line, "listening <uri>",
// once the listener is bound, so a harness can start it on port 0.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

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
	if err := fs.Parse(args); err != nil {
		return err
	}

	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))

	abs, err := filepath.Abs(*dir)
	if err != nil {
		return fmt.Errorf("data directory %q: %w", *dir, err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}

	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: *listen},
		Logger:    logger.With("component", "ferretdb"),
		Handler:   "sqlite",
		SQLiteURL: "file:" + abs + "/",
	})
	if err != nil {
		return fmt.Errorf("start FerretDB on %s: %w", *listen, err)
	}

	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()

	fmt.Fprintf(stdout, "listening %s\n", f.MongoDBURI())
	return <-done
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

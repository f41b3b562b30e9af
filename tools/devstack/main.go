// Command devstack runs the whole system on one machine for development:
// beanstalkd (with a binlog under ./data), the embedded MongoDB-compatible
// server (devmongo, unless MONGO_URL already answers), the manager, the
// worker(s) and the notifier. It prints the URLs to open and stops
// everything cleanly on Ctrl-C. `make run` builds the binaries and runs it.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "devstack:", err)
		os.Exit(1)
	}
}

// Command loadgen is the benchmark behind `make bench`. It starts the
// whole stack (beanstalkd, devmongo, manager, notifier and, per phase,
// workers) from the binaries in bin/, or measures a running one with
// BENCH_USE_STACK=1, and compares each figure with a floor taken on the
// same servers in the same run: raw beanstalkd and MongoDB calls from Go
// with nothing of ours in between. It prints a table and writes the
// figures as JSON.
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
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

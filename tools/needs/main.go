// Command needs makes sure the named programs are on PATH, installing the
// missing ones with apt-get when run as root, or else exiting 1 with the
// one command to run. `make test` calls it before the tests:
//
//	go run ./tools/needs beanstalkd chromium node
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/jobsys/jobs/tools/internal/sysdeps"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "needs:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, names []string) error {
	if len(names) == 0 {
		return fmt.Errorf("usage: needs PROGRAM... (programs: beanstalkd, chromium, node)")
	}
	progs := make([]sysdeps.Program, 0, len(names))
	for _, n := range names {
		p, err := sysdeps.Lookup(n)
		if err != nil {
			return err
		}
		progs = append(progs, p)
	}
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "needs: "+format+"\n", args...) }
	return sysdeps.Ensure(ctx, sysdeps.System{}, logf, progs...)
}

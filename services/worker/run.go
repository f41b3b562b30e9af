package main

import (
	"context"
	"io"

	"github.com/jobsys/jobs/services/worker/jobworker"
)

// run is the whole service: the public worker with only the built-in
// handlers, so bin/worker is what a program of one's own gets.
func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	return jobworker.Run(ctx, jobworker.NewMux(), getenv, stdout)
}

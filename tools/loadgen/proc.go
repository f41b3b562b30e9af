package main

import (
	"context"
	"time"

	"github.com/jobsys/jobs/pkg/procs"
)

// stopGrace bounds a child's shutdown: the benchmark's children have no
// work in flight worth waiting longer for.
const stopGrace = 10 * time.Second

// waitUntil polls ok every 25ms until it is true, the child (if any)
// exits, ctx ends or within passes.
func waitUntil(ctx context.Context, p *procs.Proc, within time.Duration, what string, ok func() error) error {
	if p == nil {
		return procs.Poll(ctx, within, what, nil, ok)
	}
	return p.WaitFor(ctx, within, what, ok)
}

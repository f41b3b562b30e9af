package main

import (
	"context"
	"sync"
	"time"

	"github.com/jobsys/jobs/pkg/procs"
)

// Restart back-off: a child that exits is started again after
// restartFirst, doubling up to restartMax while it keeps exiting; one that
// ran restartSteady before exiting starts again at restartFirst.
const (
	restartFirst  = time.Second
	restartMax    = 30 * time.Second
	restartSteady = time.Minute
)

// supervise restarts each of ps when it exits, until ctx ends, and
// returns once every watcher has stopped. A crashing service is one line
// in the log and a restart, not the end of the whole stack.
func (st *stack) supervise(ctx context.Context, ps []*procs.Proc) {
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Go(func() { st.keep(ctx, p) })
	}
	wg.Wait()
}

// keep restarts p with back-off each time it exits.
func (st *stack) keep(ctx context.Context, p *procs.Proc) {
	wait := restartFirst
	started := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.Done():
		}
		if ctx.Err() != nil {
			return // stopping: the exit is ours
		}
		if time.Since(started) >= restartSteady {
			wait = restartFirst
		}
		st.logf("%s exited (code %d); restarting it in %s", p.Name(), p.ExitCode(), wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, restartMax)
		started = time.Now()
		if err := p.Restart(); err != nil {
			st.logf("restart %s: %v", p.Name(), err)
			continue
		}
	}
}

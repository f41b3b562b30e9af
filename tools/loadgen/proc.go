package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/jobsys/jobs/pkg/procs"
)

// proc is a child process of the benchmark: a server or a service, run by
// pkg/procs. Its output goes to a log file in the run's temporary
// directory.
type proc struct {
	*procs.Proc
	name string
	log  *os.File
	// pprofURL is where a profiling build serves net/http/pprof.
	pprofURL string
}

// stopGrace bounds a child's shutdown: the benchmark's children have no
// work in flight worth waiting longer for.
const stopGrace = 10 * time.Second

// startProc runs spec in dir with its output in dir/<name>.log. The
// child's environment is spec.Env plus PATH and HOME only: the caller's
// BEANSTALK_* or a .env in the working directory must not leak into what
// is measured.
func startProc(dir string, spec procs.Spec) (*proc, error) {
	f, err := os.Create(filepath.Join(dir, spec.Name+".log"))
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", spec.Name, err)
	}
	spec.Dir, spec.Output, spec.Grace = dir, f, stopGrace
	p, err := procs.Start(spec)
	if err != nil {
		f.Close()
		return nil, err
	}
	return &proc{Proc: p, name: spec.Name, log: f}, nil
}

// stop stops the child and closes its log.
func (p *proc) stop() {
	if p == nil {
		return
	}
	p.Stop()
	p.log.Close()
}

// waitUntil polls ok every 25ms until it is true, the child (if any)
// exits, ctx ends or within passes.
func waitUntil(ctx context.Context, p *proc, within time.Duration, what string, ok func() error) error {
	if p == nil {
		return procs.Poll(ctx, within, what, nil, ok)
	}
	return p.WaitFor(ctx, within, what, ok)
}

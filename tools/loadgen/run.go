package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"
)

// bench is one run: its options, the stack, the progress display, and
// what the phases found so far.
type bench struct {
	o    options
	st   *stack
	prog *progress
	rows []row
	// phases holds each phase's detailed figures for the JSON.
	phases map[string]any
	notes  []string
	// drain1 is the measured one-worker drain rate, which sets the
	// end-to-end phase's rate.
	drain1 float64

	profMu   sync.Mutex
	profiles []string
	// took is each phase's wall time in seconds.
	took map[string]float64
}

func (b *bench) add(rows ...row) { b.rows = append(b.rows, rows...) }

func (b *bench) notef(format string, args ...any) {
	b.notes = append(b.notes, fmt.Sprintf(format, args...))
}

// run parses the flags, runs the phases, prints the table and writes the
// JSON. A phase that fails is reported and the others still run; the
// error is returned at the end.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 2 && args[0] == nullHTTPArg {
		return serveNullHTTP(ctx, args[1], stdout)
	}
	if len(args) == 3 && args[0] == plainEchoArg {
		return servePlainEcho(ctx, args[1], args[2], stdout)
	}
	o, err := parseOptions(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	started := time.Now()
	rep := report{StartedAt: started.UTC(), Machine: describeMachine(), Settings: settingsOf(o)}
	b := &bench{o: o, phases: map[string]any{}, took: map[string]float64{}}
	if lim, err := raiseNoFile(); err != nil {
		b.notef("could not raise RLIMIT_NOFILE: %v", err)
	} else if lim < uint64(o.clients)+512 && o.has(phaseFanout) {
		b.notef("RLIMIT_NOFILE is %d: the fan-out may run out of descriptors for %d clients", lim, o.clients)
	}

	if l := rep.Machine.LoadStart; len(l) > 0 && l[0] > float64(rep.Machine.NumCPU)/2 {
		b.notef("load average %.1f on %d cores at the start: other processes compete for the CPU (the \"other\" share in the limit column)", l[0], rep.Machine.NumCPU)
	}
	b.prog = newProgress(stderr, progressMode(o.progress, stderrFile(stderr)), estimate(o))
	b.prog.begin("starting the stack", 5*time.Second)
	st, err := startStack(ctx, o)
	b.st = st
	b.prog.end()
	var failures []error
	if err != nil {
		failures = append(failures, fmt.Errorf("start the stack: %w", err))
	} else {
		if o.useStack {
			b.notef("BENCH_USE_STACK=1: measured the running stack at %s; durability needs beanstalkds of its own and is skipped; drain runs only with bin/worker", o.managerURL)
		}
		for _, ph := range o.phases {
			if ctx.Err() != nil {
				break
			}
			b.prog.begin(ph, phaseEstimate(o, ph))
			began := time.Now()
			err := b.runPhase(ctx, ph)
			b.took[ph] = round2(time.Since(began).Seconds())
			b.prog.end()
			if err != nil && ctx.Err() == nil {
				failures = append(failures, fmt.Errorf("%s: %w", ph, err))
				if !errors.As(err, new(inTable)) {
					b.add(errorRow(ph, err))
				}
			}
		}
	}
	b.prog.begin("stopping the stack", 2*time.Second)
	if st != nil {
		st.close()
	}
	b.prog.end()
	b.prog.close()

	rep.TotalSeconds = time.Since(started).Seconds()
	rep.Machine.LoadEnd = loadAvg()
	if len(b.profiles) > 0 {
		b.notef("%d CPU profiles in %s: go tool pprof -top %s/<service> <file>", len(b.profiles), o.pprofDir, o.bin)
	}
	rep.Rows, rep.Phases, rep.Notes, rep.PhaseSeconds = b.rows, b.phases, b.notes, b.took
	rep.Interrupted = ctx.Err() != nil
	if err := errors.Join(failures...); err != nil {
		rep.Error = err.Error()
	}

	fmt.Fprintln(stdout)
	if err := writeTable(stdout, b.rows); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nMachine: %s\n", rep.Machine)
	for _, n := range b.notes {
		fmt.Fprintf(stdout, "Note: %s\n", n)
	}
	fmt.Fprintf(stdout, "Total time: %s (load average at end %v). Figures: %s\n",
		time.Duration(rep.TotalSeconds*float64(time.Second)).Round(100*time.Millisecond), rep.Machine.LoadEnd, o.out)
	if err := writeJSON(o.out, rep); err != nil {
		failures = append(failures, err)
	}
	if rep.Interrupted {
		return errors.New("interrupted: the figures above are partial")
	}
	return errors.Join(failures...)
}

// inTable is a phase's error that its rows already show.
type inTable struct{ error }

func (e inTable) Unwrap() error { return e.error }

func errorRow(measure string, err error) row {
	return row{Measure: measure, Ours: "—", Floor: "—", Ratio: "—", Target: "—", Result: "ERROR", Limit: err.Error()}
}

func (b *bench) runPhase(ctx context.Context, ph string) error {
	switch ph {
	case phaseIngest:
		return b.ingest(ctx)
	case phaseDrain:
		return b.drain(ctx)
	case phaseE2E:
		return b.e2e(ctx)
	case phaseLookup:
		return b.lookup(ctx)
	case phaseFanout:
		return b.fanout(ctx)
	case phaseReplay:
		return b.replay(ctx)
	case phaseDurability:
		return b.durability(ctx)
	}
	return fmt.Errorf("unknown phase %q", ph)
}

// stderrFile returns w as a file when it is one, for the terminal check.
func stderrFile(w io.Writer) *os.File {
	if f, ok := w.(*os.File); ok {
		return f
	}
	return nil
}

// raiseNoFile lifts the soft limit on open files to the hard one: the
// fan-out holds one socket per client.
func raiseNoFile() (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
			return 0, err
		}
	}
	return l.Cur, nil
}

func settingsOf(o options) map[string]any {
	return map[string]any{
		"duration_s":    o.duration.Seconds(),
		"warmup_s":      o.warmup.Seconds(),
		"jobs":          o.jobs,
		"clients":       o.clients,
		"concurrency":   o.conc,
		"phases":        o.phases,
		"use_stack":     o.useStack,
		"poll_interval": o.feedDelay.String(),
	}
}

// phaseEstimate guesses how long a phase takes, for the progress bar.
func phaseEstimate(o options, ph string) time.Duration {
	w := o.warmup + o.duration
	switch ph {
	case phaseIngest:
		return 2*w + time.Second
	case phaseDrain:
		// Two floor runs at about 1,000 jobs/s, two worker runs that may
		// be slower but stop at drainTimeout, start-up and pre-fill.
		return 8*time.Second + 2*time.Duration(o.jobs)*time.Millisecond +
			2*min(drainTimeout, time.Duration(o.jobs)*time.Second/300)
	case phaseE2E:
		return o.duration + 7*time.Second
	case phaseLookup:
		return 4*w + 2*time.Second
	case phaseFanout:
		return time.Duration(o.clients)*time.Millisecond + 8*time.Second
	case phaseReplay:
		return 40 * time.Second
	case phaseDurability:
		return 3 * (2*(o.warmup+o.duration/2) + 2*time.Second)
	}
	return time.Second
}

func estimate(o options) time.Duration {
	total := 7 * time.Second // start and stop
	for _, ph := range o.phases {
		total += phaseEstimate(o, ph)
	}
	return total
}

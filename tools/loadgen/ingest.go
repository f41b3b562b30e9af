package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/beanstalkd/go-beanstalk"

	"github.com/jobsys/jobs/pkg/testenv"
)

// ingestFigures is the ingest phase in the JSON.
type ingestFigures struct {
	Tube      string  `json:"tube"`
	Conc      int     `json:"concurrency"`
	Ours      summary `json:"ours"`
	Floor     summary `json:"floor_raw_put"`
	OursCPU   cpuUse  `json:"ours_cpu_cores"`
	FloorCPU  cpuUse  `json:"floor_cpu_cores"`
	Beanstalk string  `json:"beanstalkd"`
	// HTTPCeiling is the same client against an empty Go handler.
	HTTPCeiling    *summary `json:"http_ceiling,omitempty"`
	HTTPCeilingCPU cpuUse   `json:"http_ceiling_cpu_cores,omitempty"`
}

// ingest measures POST / at -c connections against raw puts at the same
// concurrency on the same beanstalkd. The jobs stay in a tube nobody
// watches.
func (b *bench) ingest(ctx context.Context) error {
	tube := "bench-ingest-" + testenv.RandomName()
	f := ingestFigures{Tube: tube, Conc: b.o.conc, Beanstalk: "binlog, -f 50 (as make run)"}
	if b.o.useStack {
		f.Beanstalk = "the running stack's"
	}
	var err error
	if f.Ours, f.OursCPU, err = b.postRun(ctx, b.st.managerURL, tube, b.o.duration, "POST /", "ingest"); err != nil {
		return err
	}
	if f.Floor, f.FloorCPU, err = b.putRun(ctx, b.st.beanstalkAddr, tube+"-floor", b.o.duration, "raw put"); err != nil {
		return err
	}
	b.phases[phaseIngest] = &f
	limit := errNote(f.Ours) + f.OursCPU.String()
	if b.st.own {
		// What HTTP alone costs here: the same client against a handler
		// that only reads the body and answers.
		p, u, err := b.st.startNullHTTP(ctx)
		if p != nil {
			defer b.st.stopProcs(p)
		}
		if err != nil {
			return err
		}
		c, cpu, err := b.postRun(ctx, u, "", b.o.duration, "POST to an empty handler", "")
		if err != nil {
			return fmt.Errorf("empty handler: %w", err)
		}
		f.HTTPCeiling, f.HTTPCeilingCPU = &c, cpu
		limit = fmt.Sprintf("%s= %.0f%% of an empty Go HTTP handler; %s", errNote(f.Ours), 100*f.Ours.Rate/c.Rate, f.OursCPU)
	}
	b.add(
		rateRow(fmt.Sprintf("ingest: POST / at c=%d", b.o.conc), "req/s", f.Ours.Rate, f.Floor.Rate, 0.40, limit),
		infoRow("ingest latency p50/p95/p99", fmtPcts(f.Ours), fmtPcts(f.Floor), "floor: "+f.FloorCPU.String()),
	)
	if c := f.HTTPCeiling; c != nil {
		b.add(infoRow("HTTP ceiling: POST to an empty Go handler", fmtRate(c.Rate), fmtRate(f.Floor.Rate),
			fmt.Sprintf("same client and c; p99 %s; %s", fmtMS(c.P99), f.HTTPCeilingCPU)))
	}
	return nil
}

// errNote mentions failed operations, which a rate does not show.
func errNote(s summary) string {
	note := ""
	if s.Errors > 0 {
		note = fmt.Sprintf("%d errors (%s); ", s.Errors, s.FirstError)
	}
	if s.Count > 0 && s.Unfinished > s.Count/100 {
		note += fmt.Sprintf("%d still running at the window's end; ", s.Unfinished)
	}
	return note
}

// postRun measures POSTs of fresh payloads for a window of d, one
// keep-alive connection per client, as the floor has one beanstalkd
// connection per client.
// With -pprof the manager is profiled as <prof>-<manager>.pprof.
func (b *bench) postRun(ctx context.Context, managerURL, tube string, d time.Duration, label, prof string) (summary, cpuUse, error) {
	defer b.profile(ctx, prof, b.o.warmup+d, "manager")()
	m := b.st.meter()
	s, err := hammer(ctx, b.hammerConfig(d, label), func(ctx context.Context, i int) (loop, error) {
		c, err := newHTTPConn(managerURL)
		if err != nil {
			return loop{}, err
		}
		r := rand.New(rand.NewPCG(uint64(i), uint64(time.Now().UnixNano())))
		n := 0
		return loop{
			op: func(ctx context.Context) error {
				n++
				_, err := c.postJob(ctx, tube, payload(r, n))
				return err
			},
			close: c.Close,
		}, nil
	})
	return s, m.read(), err
}

// putRun measures raw puts of the same payloads, one connection per
// client, for a window of d.
func (b *bench) putRun(ctx context.Context, addr, tube string, d time.Duration, label string) (summary, cpuUse, error) {
	m := b.st.meter()
	deadline := time.Now().Add(b.o.warmup + d + 30*time.Second)
	s, err := hammer(ctx, b.hammerConfig(d, label), func(ctx context.Context, i int) (loop, error) {
		c, err := dialBeanstalk(ctx, addr, deadline)
		if err != nil {
			return loop{}, err
		}
		t := beanstalk.NewTube(c.Conn, tube)
		r := rand.New(rand.NewPCG(uint64(i), uint64(time.Now().UnixNano())))
		n := 0
		return loop{
			op: func(context.Context) error {
				n++
				_, err := t.Put(payload(r, n), 1024, 0, 60*time.Second)
				return err
			},
			close: func() { c.Close() },
		}, nil
	})
	return s, m.read(), err
}

func (b *bench) hammerConfig(d time.Duration, label string) hammerConfig {
	return hammerConfig{
		conc: b.o.conc, warmup: b.o.warmup, d: d,
		tick: func(frac float64) { b.prog.set(-1, fmt.Sprintf("%s %3.0f%%", label, frac*100)) },
	}
}

package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/jobsys/jobs/pkg/testenv"
)

// durabilityRun is one beanstalkd configuration's ingest.
type durabilityRun struct {
	Variant  string  `json:"variant"`
	Args     string  `json:"beanstalkd_args"`
	Ours     summary `json:"ours"`
	Floor    summary `json:"floor_raw_put"`
	OursCPU  cpuUse  `json:"ours_cpu_cores"`
	FloorCPU cpuUse  `json:"floor_cpu_cores"`
	Error    string  `json:"error,omitempty"`
}

// durability measures ingest (and the raw put floor) against a fresh
// beanstalkd per binlog setting, with a manager started against each.
// Each window is half of -duration to keep the run short.
func (b *bench) durability(ctx context.Context) error {
	if !b.st.own {
		b.add(skipRow("durability: ingest by binlog setting", "needs beanstalkds of its own; BENCH_USE_STACK=1 measures one given server"))
		return nil
	}
	variants := []struct {
		name  string
		fsync int
		args  string
	}{
		// The stack's setting first: deploy/docker-compose.yml runs -f 0
		// (BEANSTALKD_FSYNC_MS), so that a 201 means the job is on disk.
		{"binlog, fsync every put (the stack's)", 0, "-b DIR -f 0"},
		{"binlog, fsync <= every 50ms (make run's)", 50, "-b DIR -f 50"},
		{"no binlog", -1, "(no -b)"},
	}
	var runs []durabilityRun
	failed := 0
	defer func() { b.phases[phaseDurability] = runs }()
	d := b.o.duration / 2
	for i, v := range variants {
		b.prog.set(-1, "starting beanstalkd "+v.args)
		tag := fmt.Sprintf("f%d", v.fsync)
		if v.fsync < 0 {
			tag = "nobinlog"
		}
		bp, addr, err := b.st.startBeanstalkd(ctx, "beanstalkd-"+tag, v.fsync)
		if err != nil {
			return err
		}
		// An empty collection of its own: with the stack's, the new
		// manager's id fence would first move the fresh beanstalkd's
		// counter past every stored id with throwaway puts.
		mp, url, err := b.st.startManager(ctx, "manager-"+tag, addr, "durability_"+tag+"_"+testenv.RandomName())
		if err != nil {
			b.st.stopProcs(bp)
			return err
		}
		r := durabilityRun{Variant: v.name, Args: v.args}
		tube := "bench-durability-" + testenv.RandomName()
		label := fmt.Sprintf("%d/3 %s", i+1, v.args)
		var oursErr, floorErr error
		r.Ours, r.OursCPU, oursErr = b.postRun(ctx, url, tube, d, label+" POST", "durability-"+tag)
		r.Floor, r.FloorCPU, floorErr = b.putRun(ctx, addr, tube+"-floor", d, label+" raw put")
		b.st.stopProcs(bp, mp)
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := errors.Join(oursErr, floorErr); err != nil {
			r.Error = err.Error()
			failed++
		}
		runs = append(runs, r)
	}
	none := runs[len(runs)-1]
	for _, r := range runs {
		measure := "durability: ingest, " + r.Variant
		if r.Error != "" {
			e := errorRow(measure, errors.New(r.Error))
			e.Ours, e.Floor = fmtRate(r.Ours.Rate), fmtRate(r.Floor.Rate)
			b.add(e)
			continue
		}
		limit := fmt.Sprintf("%s; p99 %s; %s", r.Args, fmtMS(r.Ours.P99), r.OursCPU)
		if none.Error == "" && none.Ours.Rate > 0 {
			limit = fmt.Sprintf("%.0f%% of the no-binlog ingest; ", 100*r.Ours.Rate/none.Ours.Rate) + limit
		}
		b.add(rateRow(measure, "req/s", r.Ours.Rate, r.Floor.Rate, 0, errNote(r.Ours)+limit))
	}
	if failed > 0 {
		return inTable{fmt.Errorf("%d of %d variants failed", failed, len(variants))}
	}
	return nil
}

package main

import (
	"context"
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
		{"binlog, fsync every put", 0, "-b DIR -f 0"},
		{"binlog, fsync <= every 50ms", 50, "-b DIR -f 50"},
		{"no binlog", -1, "(no -b)"},
	}
	var runs []durabilityRun
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
		mp, url, err := b.st.startManager(ctx, "manager-"+tag, addr)
		if err != nil {
			b.st.stopProcs(bp)
			return err
		}
		r := durabilityRun{Variant: v.name, Args: v.args}
		tube := "bench-durability-" + testenv.RandomName()
		label := fmt.Sprintf("%d/3 %s", i+1, v.args)
		r.Ours, r.OursCPU, err = b.postRun(ctx, url, tube, d, label+" POST")
		if err == nil {
			r.Floor, r.FloorCPU, err = b.putRun(ctx, addr, tube+"-floor", d, label+" raw put")
		}
		b.st.stopProcs(bp, mp)
		if err != nil {
			return fmt.Errorf("%s: %w", v.name, err)
		}
		runs = append(runs, r)
	}
	none := runs[len(runs)-1].Ours.Rate
	for _, r := range runs {
		limit := fmt.Sprintf("%s; p99 %s; %s", r.Args, fmtMS(r.Ours.P99), r.OursCPU)
		if none > 0 {
			limit = fmt.Sprintf("%.0f%% of the no-binlog ingest; ", 100*r.Ours.Rate/none) + limit
		}
		b.add(rateRow("durability: ingest, "+r.Variant, "req/s", r.Ours.Rate, r.Floor.Rate, 0, errNote(r.Ours)+limit))
	}
	return nil
}

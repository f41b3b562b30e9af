package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/store"
)

const (
	// bigResults is how many results the completed lookup is measured at
	// a second time: a heavy afternoon of `make run` on the embedded
	// default, where a lookup that scans shows.
	bigResults = 100_000
	// bigConc is how many clients look them up.
	bigConc = 8
	// bigP99 is the target for the p99 of those lookups.
	bigP99 = 50.0
	// bigFillerBase puts the filler results' ids far above any id beanstalkd
	// hands out in a run, so none is ever queued.
	bigFillerBase = 1 << 41
)

// importResults stores a result for each id as a worker would have,
// through the store (so in its layout on FerretDB), in bulk.
func importResults(ctx context.Context, s *store.Results, ids []uint64, tube string) error {
	now := time.Now().UTC().Truncate(time.Millisecond)
	const batch = 5000
	for lo := 0; lo < len(ids); lo += batch {
		rs := make([]job.Result, 0, batch)
		for i, id := range ids[lo:min(lo+batch, len(ids))] {
			p := fmt.Sprintf(`{"example":"data","n":%d}`, lo+i)
			rs = append(rs, job.Result{ID: id, Hash: job.Hash(p), Payload: p, Tube: tube, Worker: "loadgen",
				Attempts: 1, StartedAt: now, CompletedAt: now, StoredAt: now, DurationMS: 0.1})
		}
		if _, err := s.Import(ctx, rs); err != nil {
			return fmt.Errorf("store results to look up: %w", err)
		}
	}
	return nil
}

// lookupBig fills the lookup's collection up to bigResults results and
// measures GET /N/ of completed jobs again, with bigConc clients, against
// its floor (stats-job that misses, then the store's Find): the absolute
// figure, so that lookups that grow with the collection cannot hide
// behind a floor that grows with them.
func (b *bench) lookupBig(ctx context.Context, f *lookupFigures, s *store.Results, managerURL string, completed []uint64) {
	label := fmt.Sprintf("lookup: GET /N/ completed at %d results, c=%d", bigResults, bigConc)
	fill := bigResults - int(f.Docs)
	if fill < 0 {
		fill = 0
	}
	b.prog.set(-1, fmt.Sprintf("storing %d more results", fill))
	start := time.Now()
	filler := make([]uint64, fill)
	for i := range filler {
		filler[i] = bigFillerBase + uint64(i)
	}
	if err := importResults(ctx, s, filler, "bench-lookup-filler"); err != nil {
		b.add(errorRow(label, err))
		return
	}
	f.BigSeedSeconds = time.Since(start).Seconds()
	n, err := s.Collection().EstimatedDocumentCount(ctx)
	if err != nil {
		b.add(errorRow(label, fmt.Errorf("count results: %w", err)))
		return
	}
	f.BigDocs = n
	// Look up ids from the whole collection, the filler included.
	ids := append([]uint64(nil), completed...)
	if len(filler) > 0 {
		r := rand.New(rand.NewPCG(3, 4))
		for range 2000 {
			ids = append(ids, filler[r.IntN(len(filler))])
		}
	}
	cfg := b.hammerConfig(b.o.duration, "GET completed at 100k")
	cfg.conc = bigConc
	m := b.st.meter()
	got, err := hammer(ctx, cfg, getLoops(managerURL, ids))
	f.BigCPU = m.read()
	f.Big = got
	deadline := time.Now().Add(4*(b.o.warmup+b.o.duration) + 30*time.Second)
	cfg = b.hammerConfig(b.o.duration, "stats-job + Find at 100k")
	cfg.conc = bigConc
	m = b.st.meter()
	floor, ferr := hammer(ctx, cfg, findLoops(b.st.beanstalkAddr, s, ids, deadline))
	f.BigFloorCPU = m.read()
	f.BigFloor = floor
	if err != nil {
		b.add(errorRow(label, err))
		return
	}
	floorNote, floorP99 := fmt.Sprintf("floor stats-job miss + store Find %s", fmtRate(floor.Rate)), fmtMS(floor.P99)
	if ferr != nil {
		floorNote, floorP99 = "floor failed: "+ferr.Error(), "—"
	}
	ok := got.P99 <= bigP99 && got.Errors == 0
	b.add(row{Measure: label + " p99", Ours: fmtMS(got.P99), Floor: floorP99, Ratio: "—",
		Target: fmt.Sprintf("<= %.0f ms, no error", bigP99), Result: verdict(ok), Unit: "ms",
		OursValue: num(got.P99), FloorValue: num(floor.P99),
		Limit: strings.Join([]string{
			fmt.Sprintf("%s, p50/p95 %s / %s; %d errors", fmtRate(got.Rate), trimMS(got.P50), trimMS(got.P95), got.Errors),
			floorNote,
			fmt.Sprintf("%d results (%d stored in %.1f s)", n, fill, f.BigSeedSeconds),
			f.BigCPU.String(),
		}, "; ")})
}

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
// through the store (so in its layout on FerretDB), in bulk: completed
// a millisecond apart, the last one now, as by a fleet draining 1,000
// jobs a second.
func importResults(ctx context.Context, s *store.Results, ids []uint64, tube string) error {
	first := time.Now().UTC().Truncate(time.Millisecond).Add(-time.Duration(len(ids)) * time.Millisecond)
	const batch = 5000
	for lo := 0; lo < len(ids); lo += batch {
		rs := make([]job.Result, 0, batch)
		for i, id := range ids[lo:min(lo+batch, len(ids))] {
			p := fmt.Sprintf(`{"example":"data","n":%d}`, lo+i)
			at := first.Add(time.Duration(lo+i+1) * time.Millisecond)
			rs = append(rs, job.Result{ID: id, Hash: job.Hash(p), Payload: p, Tube: tube, Worker: "loadgen",
				Attempts: 1, StartedAt: at, CompletedAt: at, StoredAt: at, DurationMS: 0.1})
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
	b.storeReadsBig(ctx, f, s)
}

// bigReads is how many results a replay from the store reads at
// bigResults, and bigReadsMS its target.
const (
	bigReads   = 1000
	bigReadsMS = 1000.0
)

// storeReadsBig times the reads a replay makes when the notifier's
// memory does not hold what it asks (a restarted notifier, a client
// back after a long time): the newest bigReads results, and the
// bigReads after a cursor, from the store the notifier reads, at
// bigResults results.
func (b *bench) storeReadsBig(ctx context.Context, f *lookupFigures, s *store.Results) {
	label := fmt.Sprintf("store: the %d newest results, then the %d after a cursor, at %d results", bigReads, bigReads, bigResults)
	// timed runs read and returns how long it took, or an error when it
	// fails or reads other than bigReads results.
	timed := func(what string, read func() ([]job.Result, error)) ([]job.Result, time.Duration, error) {
		start := time.Now()
		rs, err := read()
		if err == nil && len(rs) != bigReads {
			err = fmt.Errorf("read %d of the %d %s", len(rs), bigReads, what)
		}
		return rs, time.Since(start), err
	}
	var newest, after []time.Duration
	for range 5 {
		rs, took, err := timed("newest results", func() ([]job.Result, error) { return s.Latest(ctx, bigReads) })
		if err != nil {
			b.add(errorRow(label, err))
			return
		}
		newest = append(newest, took)
		from := rs[0].StoredAt.Add(-time.Duration(bigReads) * time.Millisecond)
		_, took, err = timed("results after a cursor", func() ([]job.Result, error) { return s.After(ctx, from, 0, bigReads) })
		if err != nil {
			b.add(errorRow(label, err))
			return
		}
		after = append(after, took)
	}
	f.BigLatest, f.BigAfter = summarize(newest, 0, 0), summarize(after, 0, 0)
	worst := max(f.BigLatest.Max, f.BigAfter.Max)
	b.add(row{Measure: label + ", slowest", Ours: fmtMS(worst), Floor: "—", Ratio: "—",
		Target: fmt.Sprintf("<= %.0f ms", bigReadsMS), Result: verdict(worst <= bigReadsMS), Unit: "ms", OursValue: num(worst),
		Limit: fmt.Sprintf("5 of each: newest p50 %s, after a cursor p50 %s; what a replay reads when the notifier's memory lacks it",
			trimMS(f.BigLatest.P50), trimMS(f.BigAfter.P50))})
}

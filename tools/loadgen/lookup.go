package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"

	"github.com/beanstalkd/go-beanstalk"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/store"
	"github.com/jobsys/jobs/pkg/testenv"
)

// lookupFigures is the lookup phase in the JSON.
type lookupFigures struct {
	IDs     int `json:"queued_ids"`
	Results int `json:"completed_ids"`
	// Collection holds the completed results looked up, and Docs is how
	// many documents it had: on devmongo a lookup scans them all.
	Collection     string  `json:"collection"`
	Docs           int64   `json:"collection_documents"`
	Queued         summary `json:"queued"`
	QueuedFloor    summary `json:"queued_floor_stats_job"`
	Completed      summary `json:"completed"`
	CompletedFloor summary `json:"completed_floor_stats_job_miss_and_find_one"`
	// Big is GET completed again with the collection filled up to
	// bigResults, by bigConc clients; BigFloor its floor.
	Big            summary `json:"completed_at_100k"`
	BigFloor       summary `json:"completed_at_100k_floor"`
	BigCPU         cpuUse  `json:"completed_at_100k_cpu_cores"`
	BigFloorCPU    cpuUse  `json:"completed_at_100k_floor_cpu_cores"`
	BigDocs        int64   `json:"completed_at_100k_documents"`
	BigSeedSeconds float64 `json:"completed_at_100k_seed_seconds"`
	// BigLatest and BigAfter time the store's reads of a replay at
	// bigResults: the newest bigReads, the bigReads after a cursor.
	BigLatest    summary           `json:"store_newest_1000_at_100k"`
	BigAfter     summary           `json:"store_after_cursor_1000_at_100k"`
	QueuedCPU    cpuUse            `json:"queued_cpu_cores"`
	CompletedCPU cpuUse            `json:"completed_cpu_cores"`
	QFloorCPU    cpuUse            `json:"queued_floor_cpu_cores"`
	CFloorCPU    cpuUse            `json:"completed_floor_cpu_cores"`
	Errors       map[string]string `json:"errors,omitempty"`
	// HTTPCeiling is the same GETs against an empty Go handler.
	HTTPCeiling    *summary `json:"http_ceiling,omitempty"`
	HTTPCeilingCPU cpuUse   `json:"http_ceiling_cpu_cores,omitempty"`
	// PlainEcho is the same GETs against the obvious lookup handler: Echo
	// without middleware, one go-beanstalk stats-job per request.
	PlainEcho    *summary `json:"plain_echo_go_beanstalk,omitempty"`
	PlainEchoCPU cpuUse   `json:"plain_echo_go_beanstalk_cpu_cores,omitempty"`
}

const (
	// lookupIDs is how many queued jobs are looked up.
	lookupIDs = 1000
	// lookupResults is how many results are looked up; the row at
	// bigResults looks them up again among that many.
	lookupResults = 200
)

// lookup measures GET /N/ for queued jobs (ready in a tube nobody
// watches) and for completed ones, against what the manager must do
// underneath: stats-job, and for a completed job a stats-job that misses
// followed by findOne by _id.
//
// With its own stack the completed results go to a collection of the
// phase's own, read by a manager of its own, so the figure does not
// depend on how many results earlier phases left; lookupBig then fills
// that collection up to bigResults and measures again.
func (b *bench) lookup(ctx context.Context) error {
	f := lookupFigures{IDs: lookupIDs, Results: lookupResults, Errors: map[string]string{}}
	defer func() { b.phases[phaseLookup] = f }()
	b.prog.set(-1, "preparing queued jobs and results")
	queued, err := putMany(ctx, b.st.beanstalkAddr, "bench-lookup-"+testenv.RandomName(), lookupIDs, 8)
	if err != nil {
		return fmt.Errorf("queue jobs to look up: %w", err)
	}
	completed, err := burnIDs(ctx, b.st.beanstalkAddr, lookupResults)
	if err != nil {
		return fmt.Errorf("job ids for results: %w", err)
	}
	managerURL, coll, profiled := b.st.managerURL, b.st.results(), "manager"
	f.Collection = b.st.mongoColl
	if b.st.own {
		f.Collection = "lookup_" + testenv.RandomName()
		coll = b.st.mongo.Database(b.st.mongoDB).Collection(f.Collection)
		profiled = "manager-lookup"
		p, u, err := b.st.startManager(ctx, profiled, b.st.beanstalkAddr, f.Collection)
		if p != nil {
			defer b.st.stopProcs(p)
		}
		if err != nil {
			return err
		}
		managerURL = u
	}
	results := store.NewResults(b.st.mongo, b.st.mongoDB, coll.Name())
	if err := results.EnsureIndexes(ctx); err != nil { // as the worker and notifier do
		return fmt.Errorf("prepare the results store: %w", err)
	}
	if err := importResults(ctx, results, completed, "bench-lookup"); err != nil {
		return err
	}
	if f.Docs, err = coll.EstimatedDocumentCount(ctx); err != nil {
		return fmt.Errorf("count results: %w", err)
	}
	// One look at each kind first: a fast wrong answer must not pass.
	client := newHTTPClient(b.o.conc)
	defer client.CloseIdleConnections()
	if err := checkLookup(ctx, client, managerURL, queued[0], completed[0]); err != nil {
		return err
	}

	deadline := time.Now().Add(4*(b.o.warmup+b.o.duration) + 30*time.Second)
	runs := []struct {
		label string
		s     *summary
		cpu   *cpuUse
		loop  func(ctx context.Context, i int) (loop, error)
	}{
		{"GET queued", &f.Queued, &f.QueuedCPU, getLoops(managerURL, queued)},
		{"stats-job", &f.QueuedFloor, &f.QFloorCPU, statsJobLoops(b.st.beanstalkAddr, queued, deadline)},
		{"GET completed", &f.Completed, &f.CompletedCPU, getLoops(managerURL, completed)},
		{"stats-job + findOne", &f.CompletedFloor, &f.CFloorCPU, findLoops(b.st.beanstalkAddr, results, completed, deadline)},
	}
	for _, r := range runs {
		m := b.st.meter()
		var wait func()
		if strings.HasPrefix(r.label, "GET ") {
			wait = b.profile(ctx, "lookup-"+strings.TrimPrefix(r.label, "GET "), b.o.warmup+b.o.duration, profiled, "devmongo")
		}
		s, err := hammer(ctx, b.hammerConfig(b.o.duration, r.label), r.loop)
		*r.cpu = m.read()
		if wait != nil {
			wait()
		}
		*r.s = s
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			f.Errors[r.label] = err.Error()
		}
	}
	if b.st.own && f.Errors["GET queued"] == "" {
		// What HTTP alone costs here: the same GETs against a handler that
		// only answers.
		p, u, err := b.st.startNullHTTP(ctx)
		if p != nil {
			defer b.st.stopProcs(p)
		}
		if err != nil {
			return err
		}
		m := b.st.meter()
		c, err := hammer(ctx, b.hammerConfig(b.o.duration, "GET to an empty handler"), getLoops(u, queued))
		if err != nil {
			return fmt.Errorf("empty handler: %w", err)
		}
		f.HTTPCeiling, f.HTTPCeilingCPU = &c, m.read()
		b.st.stopProcs(p)

		// And what the queued GET costs written the obvious way.
		p, u, err = b.st.startPlainEcho(ctx)
		if p != nil {
			defer b.st.stopProcs(p)
		}
		if err != nil {
			return err
		}
		m = b.st.meter()
		pe, err := hammer(ctx, b.hammerConfig(b.o.duration, "GET to a plain Echo handler"), getLoops(u, queued))
		if err != nil {
			return fmt.Errorf("plain Echo handler: %w", err)
		}
		f.PlainEcho, f.PlainEchoCPU = &pe, m.read()
	}
	pair := func(measure, ours, floor string, o, fl summary, oCPU, fCPU cpuUse, floorNote string) []row {
		if e := cmp.Or(f.Errors[ours], f.Errors[floor]); e != "" {
			r := errorRow(measure, errors.New(e))
			r.Ours, r.Floor, r.Target = fmtRate(o.Rate), fmtRate(fl.Rate), ">= 80%"
			return []row{r}
		}
		return []row{
			rateRow(measure, "req/s", o.Rate, fl.Rate, 0.80, errNote(o)+floorNote+"; "+oCPU.String()),
			infoRow(strings.TrimPrefix(measure, "lookup: ")+" p50/p95/p99", fmtPcts(o), fmtPcts(fl), "floor "+fCPU.String()),
		}
	}
	queuedNote := "floor stats-job"
	if c := f.HTTPCeiling; c != nil && c.Rate > 0 {
		queuedNote = fmt.Sprintf("floor stats-job; = %.0f%% of an empty Go HTTP handler's GETs (%s)", 100*f.Queued.Rate/c.Rate, fmtRate(c.Rate))
	}
	b.add(pair(fmt.Sprintf("lookup: GET /N/ queued at c=%d", b.o.conc), "GET queued", "stats-job",
		f.Queued, f.QueuedFloor, f.QueuedCPU, f.QFloorCPU, queuedNote)...)
	if c := f.HTTPCeiling; c != nil {
		b.add(infoRow("HTTP ceiling: GET from an empty Go handler", fmtRate(c.Rate), fmtRate(f.QueuedFloor.Rate),
			fmt.Sprintf("same client and c; p99 %s; %s", fmtMS(c.P99), f.HTTPCeilingCPU)))
	}
	if c := f.PlainEcho; c != nil {
		b.add(infoRow("reference: GET from a plain Echo handler", fmtRate(c.Rate), fmtRate(f.QueuedFloor.Rate),
			fmt.Sprintf("Echo, no middleware, one go-beanstalk stats-job per GET on pooled connections; %.0f%% of the floor; p99 %s; %s",
				100*c.Rate/max(f.QueuedFloor.Rate, 1e-9), fmtMS(c.P99), f.PlainEchoCPU)))
	}
	b.add(pair(fmt.Sprintf("lookup: GET /N/ completed at c=%d", b.o.conc), "GET completed", "stats-job + findOne",
		f.Completed, f.CompletedFloor, f.CompletedCPU, f.CFloorCPU,
		fmt.Sprintf("floor stats-job miss + findOne; %d results in the collection", f.Docs))...)
	if b.st.own {
		b.lookupBig(ctx, &f, results, managerURL, completed)
	} else {
		b.add(skipRow(fmt.Sprintf("lookup: GET /N/ completed at %d results, c=%d", bigResults, bigConc),
			"not against a stack loadgen did not start: it would add results to its database"))
	}
	if len(f.Errors) > 0 {
		return inTable{fmt.Errorf("%d of 4 runs failed", len(f.Errors))}
	}
	return nil
}

// getLoops GETs random ids from base, on a keep-alive connection of the loop's
// own.
func getLoops(base string, ids []uint64) func(ctx context.Context, i int) (loop, error) {
	return func(ctx context.Context, i int) (loop, error) {
		c, err := newHTTPConn(base)
		if err != nil {
			return loop{}, err
		}
		r := rand.New(rand.NewPCG(uint64(i), 7))
		return loop{
			op: func(ctx context.Context) error {
				_, err := c.getJob(ctx, ids[r.IntN(len(ids))])
				return err
			},
			close: c.Close,
		}, nil
	}
}

// statsJobLoops is the floor of a queued lookup: stats-job on a
// connection of the loop's own.
func statsJobLoops(addr string, ids []uint64, deadline time.Time) func(ctx context.Context, i int) (loop, error) {
	return func(ctx context.Context, i int) (loop, error) {
		c, err := dialBeanstalk(ctx, addr, deadline)
		if err != nil {
			return loop{}, err
		}
		r := rand.New(rand.NewPCG(uint64(i), 7))
		return loop{
			op: func(context.Context) error {
				_, err := c.StatsJob(ids[r.IntN(len(ids))])
				return err
			},
			close: func() { c.Close() },
		}, nil
	}
}

// findLoops is the floor of a completed lookup: what the manager must do,
// a stats-job that misses and then the store's Find (a findOne by _id).
func findLoops(addr string, s *store.Results, ids []uint64, deadline time.Time) func(ctx context.Context, i int) (loop, error) {
	return func(ctx context.Context, i int) (loop, error) {
		c, err := dialBeanstalk(ctx, addr, deadline)
		if err != nil {
			return loop{}, err
		}
		r := rand.New(rand.NewPCG(uint64(i), 7))
		return loop{
			op: func(ctx context.Context) error {
				id := ids[r.IntN(len(ids))]
				if _, err := c.StatsJob(id); !errors.Is(err, beanstalk.ErrNotFound) {
					return fmt.Errorf("stats-job %d: want NOT_FOUND, got %v", id, err)
				}
				_, err := s.Find(ctx, id)
				return err
			},
			close: func() { c.Close() },
		}, nil
	}
}

// checkLookup makes sure the manager answers a queued job with its
// statistics and a completed one with its result.
func checkLookup(ctx context.Context, hc *http.Client, managerURL string, queued, completed uint64) error {
	body, err := getJob(ctx, hc, managerURL, queued)
	if err != nil {
		return fmt.Errorf("GET /%d/ (queued): %w", queued, err)
	}
	var s job.Stats
	if err := json.Unmarshal(body, &s); err != nil || s.ID != queued || s.State != job.StateReady {
		return fmt.Errorf("GET /%d/ (queued) answered %s: want its stats-job with state ready", queued, body)
	}
	body, err = getJob(ctx, hc, managerURL, completed)
	if err != nil {
		return fmt.Errorf("GET /%d/ (completed): %w", completed, err)
	}
	var r job.Result
	if err := json.Unmarshal(body, &r); err != nil || r.ID != completed || r.Hash == "" || !bytes.Contains(body, []byte(`"payload"`)) {
		return fmt.Errorf("GET /%d/ (completed) answered %s: want the stored result", completed, body)
	}
	return nil
}

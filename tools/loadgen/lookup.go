package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/beanstalkd/go-beanstalk"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/testenv"
)

// lookupFigures is the lookup phase in the JSON.
type lookupFigures struct {
	IDs            int     `json:"ids_each"`
	Queued         summary `json:"queued"`
	QueuedFloor    summary `json:"queued_floor_stats_job"`
	Completed      summary `json:"completed"`
	CompletedFloor summary `json:"completed_floor_stats_job_miss_and_find_one"`
	QueuedCPU      cpuUse  `json:"queued_cpu_cores"`
	CompletedCPU   cpuUse  `json:"completed_cpu_cores"`
	QFloorCPU      cpuUse  `json:"queued_floor_cpu_cores"`
	CFloorCPU      cpuUse  `json:"completed_floor_cpu_cores"`
}

const (
	lookupIDs = 1000
	// completedBase keeps the ids of results written directly to the
	// store clear of beanstalkd's own ids.
	completedBase = uint64(1) << 40
)

// lookup measures GET /N/ for queued jobs (ready in a tube nobody
// watches) and for completed ones (results written to the store), against
// what the manager must do underneath: stats-job, and for a completed job
// a stats-job that misses followed by findOne by _id.
func (b *bench) lookup(ctx context.Context) error {
	f := lookupFigures{IDs: lookupIDs}
	tube := "bench-lookup-" + testenv.RandomName()
	b.prog.set(-1, "preparing queued jobs and results")
	queued, err := putMany(ctx, b.st.beanstalkAddr, tube, lookupIDs, 8)
	if err != nil {
		return fmt.Errorf("queue jobs to look up: %w", err)
	}
	completed, err := b.storeResults(ctx, completedBase+uint64(time.Now().UnixMilli()%1_000_000)*lookupIDs, lookupIDs)
	if err != nil {
		return err
	}
	// One look at each kind first: a fast wrong answer must not pass.
	client := newHTTPClient(b.o.conc)
	defer client.CloseIdleConnections()
	if err := checkLookup(ctx, client, b.st.managerURL, queued[0], completed[0]); err != nil {
		return err
	}

	get := func(ids []uint64) func(ctx context.Context, i int) (loop, error) {
		return func(ctx context.Context, i int) (loop, error) {
			r := rand.New(rand.NewPCG(uint64(i), 7))
			return loop{
				op: func(ctx context.Context) error {
					_, err := getJob(ctx, client, b.st.managerURL, ids[r.IntN(len(ids))])
					return err
				},
				close: func() {},
			}, nil
		}
	}
	deadline := time.Now().Add(4*(b.o.warmup+b.o.duration) + 30*time.Second)
	runs := []struct {
		label string
		s     *summary
		cpu   *cpuUse
		loop  func(ctx context.Context, i int) (loop, error)
	}{
		{"GET queued", &f.Queued, &f.QueuedCPU, get(queued)},
		{"stats-job", &f.QueuedFloor, &f.QFloorCPU, statsJobLoops(b.st.beanstalkAddr, queued, deadline)},
		{"GET completed", &f.Completed, &f.CompletedCPU, get(completed)},
		{"stats-job + findOne", &f.CompletedFloor, &f.CFloorCPU, findLoops(b.st.beanstalkAddr, b.st.results(), completed, deadline)},
	}
	for _, r := range runs {
		m := b.st.meter()
		s, err := hammer(ctx, b.hammerConfig(b.o.duration, r.label), r.loop)
		*r.cpu = m.read()
		if err != nil {
			return fmt.Errorf("%s: %w", r.label, err)
		}
		*r.s = s
	}
	b.phases[phaseLookup] = f
	b.add(
		rateRow(fmt.Sprintf("lookup: GET /N/ queued at c=%d", b.o.conc), "req/s", f.Queued.Rate, f.QueuedFloor.Rate, 0.80,
			errNote(f.Queued)+"floor stats-job; "+f.QueuedCPU.String()),
		infoRow("lookup queued p50/p95/p99", fmtPcts(f.Queued), fmtPcts(f.QueuedFloor), "floor "+f.QFloorCPU.String()),
		rateRow(fmt.Sprintf("lookup: GET /N/ completed at c=%d", b.o.conc), "req/s", f.Completed.Rate, f.CompletedFloor.Rate, 0.80,
			errNote(f.Completed)+"floor stats-job miss + findOne; "+f.CompletedCPU.String()),
		infoRow("lookup completed p50/p95/p99", fmtPcts(f.Completed), fmtPcts(f.CompletedFloor), "floor "+f.CFloorCPU.String()),
	)
	return nil
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
// a stats-job that misses and then findOne by _id.
func findLoops(addr string, coll *mongo.Collection, ids []uint64, deadline time.Time) func(ctx context.Context, i int) (loop, error) {
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
				var res job.Result
				return coll.FindOne(ctx, bson.D{{Key: "_id", Value: int64(id)}}).Decode(&res)
			},
			close: func() { c.Close() },
		}, nil
	}
}

// storeResults writes n results with ids from base directly to the
// store, as a worker would have, and returns their ids.
func (b *bench) storeResults(ctx context.Context, base uint64, n int) ([]uint64, error) {
	now := time.Now().UTC()
	docs := make([]any, n)
	ids := make([]uint64, n)
	for i := range n {
		p := fmt.Sprintf(`{"example":"data","n":%d}`, i)
		ids[i] = base + uint64(i)
		docs[i] = job.Result{ID: ids[i], Hash: job.Hash(p), Payload: p, Tube: "bench-lookup", Worker: "loadgen",
			Attempts: 1, StartedAt: now, CompletedAt: now, DurationMS: 0.1}
	}
	if _, err := b.st.results().InsertMany(ctx, docs); err != nil {
		return nil, fmt.Errorf("store results to look up: %w", err)
	}
	return ids, nil
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

package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/beanstalkd/go-beanstalk"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	mongoopts "go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/testenv"
)

// drainRun is one drain measurement: n jobs from ready to stored.
type drainRun struct {
	Tube       string `json:"tube"`
	Collection string `json:"collection"`
	Processes  int    `json:"processes"`
	Jobs       int    `json:"jobs"`
	Stored     int    `json:"stored"`
	// Seconds runs from the first job's reserve to the last result's
	// store; Rate is Stored over it.
	Seconds float64 `json:"seconds"`
	Rate    float64 `json:"per_second"`
	// WallSeconds runs from starting the processes (or loops) to the last
	// store, so it includes their start-up.
	WallSeconds float64 `json:"wall_seconds"`
	// TimedOut: the run stopped after drainTimeout with jobs left.
	TimedOut bool   `json:"timed_out,omitempty"`
	CPU      cpuUse `json:"cpu_cores"`
}

type drainFigures struct {
	Runs []drainRun `json:"runs"`
}

// drainTimeout bounds one drain run, so that a slow or stuck store cannot
// push the benchmark past its time budget. A run that hits it reports the
// rate of what it stored.
const drainTimeout = 20 * time.Second

// drain pre-fills a fresh tube for each run and measures how fast it
// empties: first the floor (plain reserve, insert, delete loops), then the
// same number of worker processes; with 1 and with 3.
func (b *bench) drain(ctx context.Context) error {
	var f drainFigures
	defer func() { b.phases[phaseDrain] = f }()
	byN := map[int][2]drainRun{}
	for _, n := range []int{1, 3} {
		floor, err := b.drainOnce(ctx, n, true)
		if err != nil {
			return fmt.Errorf("floor with %d loops: %w", n, err)
		}
		f.Runs = append(f.Runs, floor)
		ours, err := b.drainOnce(ctx, n, false)
		if errors.Is(err, errNoWorkerBinary) {
			b.add(skipRow(fmt.Sprintf("drain: %d worker(s)", n), "no bin/worker to start"))
			continue
		}
		if err != nil {
			return fmt.Errorf("%d worker(s): %w", n, err)
		}
		f.Runs = append(f.Runs, ours)
		byN[n] = [2]drainRun{ours, floor}
	}
	if r, ok := byN[1]; ok {
		b.drain1 = r[0].Rate
		b.add(rateRow("drain: 1 worker (jobs/s)", "jobs/s", r[0].Rate, r[1].Rate, 0.90,
			storedNote(r[0])+"ours "+r[0].CPU.String()+"; floor "+storedNote(r[1])+r[1].CPU.String()))
	}
	if r, ok := byN[3]; ok {
		limit := storedNote(r[0]) + "ours " + r[0].CPU.String()
		if one, ok := byN[1]; ok && one[1].Rate > 0 {
			limit = fmt.Sprintf("%s3 loops = %.2fx 1 loop: %s; floor %s", storedNote(r[0]), r[1].Rate/one[1].Rate,
				scalingNote(r[1].Rate/one[1].Rate), r[1].CPU.String())
		}
		b.add(rateRow("drain: 3 workers vs 3 loops", "jobs/s", r[0].Rate, r[1].Rate, 0, limit))
	}
	return nil
}

func storedNote(r drainRun) string {
	switch {
	case r.TimedOut:
		return fmt.Sprintf("stopped after %s with %d of %d stored; ", drainTimeout, r.Stored, r.Jobs)
	case r.Stored != r.Jobs:
		return fmt.Sprintf("only %d of %d stored; ", r.Stored, r.Jobs)
	}
	return ""
}

// scalingNote says what a 3-loop/1-loop floor ratio means: the loops
// share only the servers, so a ratio near 1 puts the limit there.
func scalingNote(x float64) string {
	switch {
	case x < 1.3:
		return "the servers (mostly the store) are the limit, not the number of consumers"
	case x < 2.4:
		return "consumers help only partly: the servers and the 2 cores are shared"
	}
	return "consumers scale: the limit is per consumer"
}

// drainOnce pre-fills a fresh tube with b.o.jobs raw puts and drains it
// with n floor loops (floor) or n worker processes.
func (b *bench) drainOnce(ctx context.Context, n int, floor bool) (drainRun, error) {
	kind := "workers"
	if floor {
		kind = "loops"
	} else if b.st.workerBin == "" {
		return drainRun{}, errNoWorkerBinary
	}
	tube := fmt.Sprintf("bench-drain-%d%s-%s", n, kind[:1], testenv.RandomName())
	// A collection of the run's own: FerretDB's SQLite backend scans a
	// whole table for any query but one on a string or ObjectID _id, so
	// thousands of drained results in the collection the notifier and
	// the manager read would slow every later phase.
	run := drainRun{Tube: tube, Collection: "drain_" + strings.ReplaceAll(tube, "-", "_"), Processes: n, Jobs: b.o.jobs}
	coll := b.st.mongo.Database(b.st.mongoDB).Collection(run.Collection)
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = coll.Drop(dctx)
	}()
	b.prog.set(-1, fmt.Sprintf("pre-filling %d jobs for %d %s", b.o.jobs, n, kind))
	if _, err := putMany(ctx, b.st.beanstalkAddr, tube, b.o.jobs, 8); err != nil {
		return run, fmt.Errorf("pre-fill: %w", err)
	}
	b.prog.set(-1, fmt.Sprintf("draining with %d %s", n, kind))
	m := b.st.meter()
	var err error
	if floor {
		err = b.drainLoops(ctx, &run, coll, n)
	} else {
		err = b.drainWorkers(ctx, &run, coll, n)
	}
	run.CPU = m.read()
	if err != nil {
		return run, err
	}
	if run.Seconds > 0 {
		run.Rate = float64(run.Stored) / run.Seconds
	}
	return run, nil
}

// drainLoops is the floor: n loops of reserve, insert the result, delete,
// each on its own connection, into coll as the workers would.
func (b *bench) drainLoops(parent context.Context, run *drainRun, coll *mongo.Collection, n int) error {
	ctx, cancel := context.WithTimeout(parent, drainTimeout)
	defer cancel()
	var (
		stored    atomic.Int64
		mu        sync.Mutex
		first     time.Time
		last      time.Time
		errs      = make([]error, n)
		wg        sync.WaitGroup
		wallStart = time.Now()
	)
	for i := range n {
		wg.Go(func() {
			c, err := dialBeanstalk(ctx, b.st.beanstalkAddr, time.Now().Add(drainTimeout+10*time.Second))
			if err != nil {
				errs[i] = err
				return
			}
			defer c.Close()
			ts := beanstalk.NewTubeSet(c.Conn, run.Tube)
			var myFirst, myLast time.Time
			defer func() {
				mu.Lock()
				if !myFirst.IsZero() && (first.IsZero() || myFirst.Before(first)) {
					first = myFirst
				}
				if myLast.After(last) {
					last = myLast
				}
				mu.Unlock()
			}()
			for ctx.Err() == nil && stored.Load() < int64(run.Jobs) {
				t0 := time.Now()
				id, body, err := ts.Reserve(100 * time.Millisecond)
				if errors.Is(err, beanstalk.ErrTimeout) {
					continue
				}
				if err != nil {
					errs[i] = fmt.Errorf("reserve: %w", err)
					return
				}
				if myFirst.IsZero() {
					myFirst = t0
				}
				done := time.Now()
				r := job.Result{ID: id, Hash: job.Hash(string(body)), Payload: string(body), Tube: run.Tube,
					Worker: "floor", Attempts: 1, StartedAt: t0.UTC(), CompletedAt: done.UTC(), StoredAt: done.UTC(),
					DurationMS: float64(done.Sub(t0)) / float64(time.Millisecond)}
				if _, err := coll.InsertOne(ctx, r); err != nil {
					errs[i] = fmt.Errorf("insert result %d: %w", id, err)
					return
				}
				myLast = time.Now()
				stored.Add(1)
				if err := c.Delete(id); err != nil {
					errs[i] = fmt.Errorf("delete %d: %w", id, err)
					return
				}
			}
		})
	}
	wg.Wait()
	run.Stored = int(stored.Load())
	if !first.IsZero() {
		run.Seconds = last.Sub(first).Seconds()
		run.WallSeconds = last.Sub(wallStart).Seconds()
	}
	if err := parent.Err(); err != nil {
		return err
	}
	if ctx.Err() != nil {
		// The budget ran out: what failed then failed for that reason.
		run.TimedOut = true
		return nil
	}
	return errors.Join(errs...)
}

// drainWorkers starts n worker processes on the tube, waits until the
// tube is empty, and reads the first start and last completion from the
// stored results.
func (b *bench) drainWorkers(parent context.Context, run *drainRun, coll *mongo.Collection, n int) error {
	ctx, cancel := context.WithTimeout(parent, drainTimeout)
	defer cancel()
	wallStart := time.Now()
	ps, err := b.st.startWorkers(ctx, n, run.Tube, run.Collection)
	defer b.st.stopProcs(ps...)
	if err != nil {
		return err
	}
	// A short profile: the workers stop when the tube is empty.
	defer b.profile(ctx, fmt.Sprintf("drain-%dw", n), 3*time.Second, "worker", "devmongo")()
	c, err := dialBeanstalk(ctx, b.st.beanstalkAddr, time.Now().Add(drainTimeout+10*time.Second))
	if err != nil {
		return err
	}
	defer c.Close()
	for {
		ready, reserved, err := c.tubeStats(run.Tube)
		if err != nil {
			return err
		}
		if ready == 0 && reserved == 0 {
			break
		}
		for _, p := range ps {
			if p.Exited() {
				return p.Failed(errors.New("worker exited during the drain"))
			}
		}
		b.prog.set(-1, fmt.Sprintf("draining with %d workers: %d left", n, ready+reserved))
		select {
		case <-ctx.Done():
			if err := parent.Err(); err != nil {
				return err
			}
			run.TimedOut = true
		case <-time.After(20 * time.Millisecond):
		}
		if run.TimedOut {
			break
		}
	}
	rctx, rcancel := context.WithTimeout(parent, 30*time.Second)
	defer rcancel()
	first, last, count, err := resultSpan(rctx, coll, run.Tube)
	if err != nil {
		return err
	}
	run.Stored = count
	if count > 0 {
		run.Seconds = last.Sub(first).Seconds()
		run.WallSeconds = last.Sub(wallStart).Seconds()
	}
	return nil
}

// resultSpan returns the earliest started_at, the latest stored_at (or
// completed_at, for results without it) and the number of results stored
// for tube.
func resultSpan(ctx context.Context, coll *mongo.Collection, tube string) (first, last time.Time, n int, err error) {
	opts := mongoopts.Find().SetProjection(bson.D{{Key: "started_at", Value: 1}, {Key: "completed_at", Value: 1}, {Key: "stored_at", Value: 1}})
	cur, err := coll.Find(ctx, bson.D{{Key: "tube", Value: tube}}, opts)
	if err != nil {
		return first, last, 0, fmt.Errorf("read results of %s: %w", tube, err)
	}
	defer cur.Close(ctx)
	for cur.Next(ctx) {
		var r struct {
			StartedAt   time.Time `bson:"started_at"`
			CompletedAt time.Time `bson:"completed_at"`
			StoredAt    time.Time `bson:"stored_at"`
		}
		if err := cur.Decode(&r); err != nil {
			return first, last, n, fmt.Errorf("decode result: %w", err)
		}
		n++
		if first.IsZero() || r.StartedAt.Before(first) {
			first = r.StartedAt
		}
		// The store's own stamp when there is one: the result is stored
		// then, not when the worker finished the work.
		done := r.StoredAt
		if done.IsZero() {
			done = r.CompletedAt
		}
		if done.After(last) {
			last = done
		}
	}
	return first, last, n, cur.Err()
}

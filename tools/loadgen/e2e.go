package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/store"
	"github.com/jobsys/jobs/pkg/testenv"
)

// e2eFigures is the end-to-end phase in the JSON.
type e2eFigures struct {
	Tube       string  `json:"tube"`
	Rate       float64 `json:"target_per_second"`
	RateSource string  `json:"rate_source"`
	Sockets    int     `json:"websockets"`
	Sent       int     `json:"sent"`
	Missing    int     `json:"missing"`
	PostErrors int     `json:"post_errors"`
	FirstError string  `json:"first_error,omitempty"`
	LateSends  int     `json:"late_sends"`
	// DrainSeconds is how long after the last send the events kept
	// coming: more than a second or so means the worker fell behind.
	DrainSeconds float64 `json:"seconds_after_last_send"`
	Poll         string  `json:"poll_interval"`
	// Mode is the notifier's feed: changestream or poll.
	Mode    string  `json:"feed_mode"`
	Latency summary `json:"latency"`
	// ToStore runs from the POST's answer to the result's stored_at,
	// ToNotify from there to the event.
	ToStore  summary `json:"post_to_stored"`
	ToNotify summary `json:"stored_to_event"`
	CPU      cpuUse  `json:"cpu_cores"`
	// StoreLookups is what the notifier asked the store about jobs gone
	// from the queue during the run (its notifier_store_lookup*
	// counters), by series; absent when it does not expose them.
	StoreLookups map[string]float64 `json:"notifier_store_lookups,omitempty"`
	IdleBefore   idle               `json:"idle_before"`
	IdleAfter    idle               `json:"idle_after"`
}

// e2eSockets is how many WebSockets share the subscriptions.
const e2eSockets = 4

// e2e POSTs jobs at half the one-worker drain rate and measures from each
// POST's answer to the completion event on a WebSocket subscribed to that
// job.
func (b *bench) e2e(ctx context.Context) error {
	f := e2eFigures{Rate: b.drain1 / 2, RateSource: "half the measured 1-worker drain rate", Sockets: e2eSockets, Poll: b.st.feedDelay.String()}
	if b.o.e2eRate > 0 {
		f.Rate, f.RateSource = b.o.e2eRate, "fixed by -e2e-rate"
	}
	if f.Rate <= 0 && b.st.workerBin != "" {
		// The drain phase did not run: measure a short one for the rate.
		saved := b.o.jobs
		b.o.jobs = max(500, saved/5)
		r, err := b.drainOnce(ctx, 1, false)
		b.o.jobs = saved
		if err != nil {
			return fmt.Errorf("calibrating drain: %w", err)
		}
		f.Rate, f.RateSource = r.Rate/2, fmt.Sprintf("half the 1-worker drain rate of a %d-job calibration run", r.Jobs)
	}
	if f.Rate <= 0 {
		f.Rate, f.RateSource = 50, "fixed 50/s: no worker binary to measure a drain rate with"
	}

	// Our own worker on a fresh tube, or the running stack's workers on
	// BENCH_TUBE.
	f.Tube = b.o.tube
	if b.st.workerBin != "" {
		f.Tube = "bench-e2e-" + testenv.RandomName()
		ps, err := b.st.startWorkers(ctx, 1, f.Tube, "")
		defer b.st.stopProcs(ps...)
		if err != nil {
			return err
		}
	}
	defer func() { b.phases[phaseE2E] = f }()

	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		pending sync.Map // job id -> time the POST was answered
		mu      sync.Mutex
		lat     []time.Duration
		// toStore and toNotify split lat at the result's completed_at.
		toStore, toNotify []time.Duration
		readers           sync.WaitGroup
	)
	defer readers.Wait()
	defer cancel()
	socks := make([]*websocket.Conn, e2eSockets)
	for i := range socks {
		c, _, err := websocket.Dial(rctx, wsURL(b.st.notifierURL), nil)
		if err != nil {
			return fmt.Errorf("connect to the notifier: %w", err)
		}
		c.SetReadLimit(1 << 20)
		socks[i] = c
		defer c.CloseNow()
		readers.Go(func() {
			for {
				_, data, err := c.Read(rctx)
				if err != nil {
					return
				}
				at := time.Now()
				var ev struct {
					Type   string    `json:"type"`
					ID     uint64    `json:"id"`
					State  job.State `json:"state"`
					Result *struct {
						CompletedAt time.Time `json:"completed_at"`
						StoredAt    time.Time `json:"stored_at"`
					} `json:"result"`
				}
				if json.Unmarshal(data, &ev) != nil || ev.Type != job.TypeJob || ev.State != job.StateCompleted {
					continue
				}
				if v, ok := pending.LoadAndDelete(ev.ID); ok {
					t0 := v.(time.Time)
					mu.Lock()
					lat = append(lat, at.Sub(t0))
					// The store's clock is this machine's: the time the
					// result was stored splits the latency into queue,
					// work and write (to store) and the notifier's part
					// (to notify), to the millisecond the store keeps.
					if ev.Result != nil {
						stored := cmp.Or(ev.Result.StoredAt, ev.Result.CompletedAt)
						if !stored.IsZero() {
							toStore = append(toStore, max(0, stored.Sub(t0)))
							toNotify = append(toNotify, max(0, at.Sub(stored)))
						}
					}
					mu.Unlock()
				}
			}
		})
	}

	// What the idle stack costs the store before and after.
	var err error
	if f.IdleBefore, err = b.idleCost(ctx); err != nil {
		return err
	}

	client := newHTTPClient(64)
	defer client.CloseIdleConnections()
	lookupsBefore := b.storeLookups(ctx)
	m := b.st.meter()
	defer b.profile(ctx, "e2e", b.o.duration, "manager", "notifier", "worker", "devmongo")()
	interval := time.Duration(float64(time.Second) / f.Rate)
	start := time.Now()
	end := start.Add(b.o.duration)
	var (
		sent, postErrs atomic.Int64
		firstErr       atomic.Value
		senders        sync.WaitGroup
		sem            = make(chan struct{}, 256)
		r              = rand.New(rand.NewPCG(1, uint64(start.UnixNano())))
		timer          = time.NewTimer(0)
	)
	<-timer.C
	for i := 0; ; i++ {
		at := start.Add(time.Duration(i) * interval)
		if !at.Before(end) {
			break
		}
		if wait := time.Until(at); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				timer.Stop()
				senders.Wait()
				return ctx.Err()
			case <-timer.C:
			}
		} else if wait < -10*time.Millisecond {
			f.LateSends++
		}
		b.prog.set(-1, fmt.Sprintf("%.0f jobs/s, %d sent", f.Rate, i))
		sem <- struct{}{}
		body := payload(r, i)
		senders.Go(func() {
			defer func() { <-sem }()
			id, err := postJob(rctx, client, b.st.managerURL, f.Tube, body)
			if err != nil {
				postErrs.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
				return
			}
			pending.Store(id, time.Now())
			sent.Add(1)
			msg, _ := json.Marshal(job.ClientMessage{Type: job.TypeSubscribe, Jobs: []uint64{id}})
			if err := socks[id%e2eSockets].Write(rctx, websocket.MessageText, msg); err != nil {
				firstErr.CompareAndSwap(nil, "subscribe: "+err.Error())
			}
		})
	}
	senders.Wait()
	// Let the last completions arrive. A backlog drains for as long as
	// events keep coming; an event that has not come after a quiet spell
	// (three seconds, plus four feed delays should the feed poll)
	// counts as missing.
	quiet := 3*time.Second + 4*b.st.feedDelay
	hardStop := time.Now().Add(15 * time.Second)
	left, lastChange := countMap(&pending), time.Now()
	for left > 0 && time.Since(lastChange) < quiet && time.Now().Before(hardStop) {
		b.prog.set(-1, fmt.Sprintf("waiting for %d events", left))
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return err
		}
		if n := countMap(&pending); n != left {
			left, lastChange = n, time.Now()
		}
	}
	f.DrainSeconds = time.Since(end).Seconds()
	f.CPU = m.read()
	if after := b.storeLookups(ctx); after != nil && lookupsBefore != nil {
		f.StoreLookups = map[string]float64{}
		for k, v := range after {
			f.StoreLookups[k] = v - lookupsBefore[k]
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	cancel()
	readers.Wait()
	f.Sent, f.PostErrors, f.Missing = int(sent.Load()), int(postErrs.Load()), countMap(&pending)
	if s, ok := firstErr.Load().(string); ok {
		f.FirstError = s
	}
	f.Latency = summarize(lat, f.PostErrors+f.Missing, b.o.duration)
	f.ToStore = summarize(toStore, 0, b.o.duration)
	f.ToNotify = summarize(toNotify, 0, b.o.duration)
	if f.Latency.Count == 0 {
		return errors.Join(fmt.Errorf("no completion event arrived for %d jobs sent", f.Sent), errIf(f.FirstError))
	}
	f.Mode = b.feedMode(ctx)
	// The idle cost at a stated size: the results collection topped up
	// to idleResults, so that runs compare however many jobs they made.
	filler, err := b.fillResults(ctx, idleResults)
	if err != nil {
		return err
	}
	f.IdleAfter, err = b.idleCost(ctx)
	if derr := b.removeResults(ctx, filler); err == nil {
		err = derr
	}
	if err != nil {
		return err
	}
	// Later phases should not pay for this one's results: on FerretDB
	// every read of the collection that is not by _id scans them all.
	if b.st.own {
		dctx, dcancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := b.st.results().DeleteMany(dctx, bson.D{{Key: "tube", Value: f.Tube}})
		dcancel()
		if err != nil {
			return fmt.Errorf("remove the phase's results: %w", err)
		}
	}
	feed := "feed " + f.Mode
	if f.Mode != "changestream" {
		feed += ", poll " + f.Poll
	}
	limit := fmt.Sprintf("p99 POST->stored %s, stored->event %s (%s); %.0f jobs/s (%s)",
		fmtMS(f.ToStore.P99), fmtMS(f.ToNotify.P99), feed, f.Rate, f.RateSource)
	if l := f.StoreLookups; l != nil {
		limit += fmt.Sprintf("; notifier store lookups: %.0f queries for %.0f jobs", l[lookupSeries[0]], l[lookupSeries[1]])
	}
	if f.Missing > 0 || f.PostErrors > 0 {
		limit = fmt.Sprintf("%d events missing, %d POST errors; ", f.Missing, f.PostErrors) + limit
	}
	b.add(
		maxRow("end to end p99 (POST answer -> WS event)", "ms", f.Latency.P99, 0, e2eP99Bound, fmtMS, limit),
		maxRow("end to end p50 (POST answer -> WS event)", "ms", f.Latency.P50, 0, e2eP50Bound, fmtMS, "p50/p95/p99 "+fmtPcts(f.Latency)+"; "+f.CPU.String()),
	)
	if f.IdleBefore.Docs >= 0 && f.IdleAfter.Cores >= 0 {
		b.add(maxRow(fmt.Sprintf("idle stack: devmongo CPU, %d results", f.IdleAfter.Docs), "cores",
			f.IdleAfter.Cores, 0, idleCoresBound, func(v float64) string { return fmt.Sprintf("%.3f", v) },
			fmt.Sprintf("no requests, notifier connected (%s), after 2s to settle; %.3f cores at %d results before the phase", feed, f.IdleBefore.Cores, f.IdleBefore.Docs)))
	}
	return nil
}

// Targets of the end-to-end phase: from a POST's answer to the completion
// on a WebSocket, and what the idle stack may cost the store.
const (
	e2eP99Bound    = 300 // ms
	e2eP50Bound    = 100 // ms
	idleCoresBound = 0.02
	// idleResults is the size of the results collection the idle cost is
	// measured at.
	idleResults = 10000
)

// feedMode asks the notifier which feed it runs: changestream or poll
// (notifier_feed_mode), or "unknown".
func (b *bench) feedMode(ctx context.Context) string {
	for _, m := range []string{"changestream", "poll"} {
		if v, err := metricValue(ctx, b.st.notifierURL+"/metrics", `notifier_feed_mode{mode="`+m+`"}`); err == nil && v == 1 {
			return m
		}
	}
	return "unknown"
}

// fillerBase is where the ids of the idle phase's filler results start:
// far above any id beanstalkd hands out in a bench.
const fillerBase = 1 << 40

// fillResults inserts results until the collection holds n, and returns
// the filler's tube so that removeResults can take them out again. It
// inserts nothing into a stack it does not own.
func (b *bench) fillResults(ctx context.Context, n int64) (string, error) {
	if !b.st.own {
		return "", nil
	}
	coll := b.st.results()
	have, err := coll.EstimatedDocumentCount(ctx)
	if err != nil {
		return "", fmt.Errorf("count results: %w", err)
	}
	tube := "bench-idle-" + testenv.RandomName()
	// Through the store, in the layout it keeps on the server.
	b.prog.set(-1, fmt.Sprintf("filling the results to %d", n))
	ids := make([]uint64, 0, max(n-have, 0))
	for i := have; i < n; i++ {
		ids = append(ids, uint64(fillerBase+i))
	}
	if err := importResults(ctx, store.NewResults(b.st.mongo, b.st.mongoDB, b.st.mongoColl), ids, tube); err != nil {
		return tube, fmt.Errorf("fill the results: %w", err)
	}
	return tube, nil
}

// removeResults deletes the results of tube, if any.
func (b *bench) removeResults(ctx context.Context, tube string) error {
	if tube == "" {
		return nil
	}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := b.st.results().DeleteMany(dctx, bson.D{{Key: "tube", Value: tube}}); err != nil {
		return fmt.Errorf("remove the filler results: %w", err)
	}
	return nil
}

// lookupSeries are the notifier's counters of store lookups for jobs gone
// from the queue.
var lookupSeries = []string{`notifier_store_lookups_total`, `notifier_store_lookup_jobs_total`}

// storeLookups reads lookupSeries from the notifier, or returns nil when
// it cannot (a notifier that does not count them).
func (b *bench) storeLookups(ctx context.Context) map[string]float64 {
	out := map[string]float64{}
	for _, s := range lookupSeries {
		v, err := metricValue(ctx, b.st.notifierURL+"/metrics", s)
		if err != nil {
			return nil
		}
		out[s] = v
	}
	return out
}

// idle is the store's CPU use while nothing but the stack's own
// background work runs.
type idle struct {
	Docs  int64   `json:"results"`
	Cores float64 `json:"devmongo_cores"`
}

// idleCost measures devmongo's CPU for five quiet seconds, after two to
// settle, with idleResults results in the collection the notifier
// follows: an idle notifier on a change stream should cost devmongo
// nothing, however many results there are. Five seconds also hold one
// of the reads a polling notifier makes at least every 5s (the feed's
// maxQuiet). Without a devmongo of its own it reports -1s.
func (b *bench) idleCost(ctx context.Context) (idle, error) {
	n, err := b.st.results().EstimatedDocumentCount(ctx)
	if err != nil {
		return idle{}, fmt.Errorf("count results: %w", err)
	}
	if !b.st.own {
		return idle{Docs: n, Cores: -1}, nil
	}
	b.prog.set(-1, fmt.Sprintf("idle for 2s+5s with %d results", n))
	if err := sleepCtx(ctx, 2*time.Second); err != nil {
		return idle{}, err
	}
	m := b.st.meter()
	if err := sleepCtx(ctx, 5*time.Second); err != nil {
		return idle{}, err
	}
	return idle{Docs: n, Cores: m.read()["devmongo"]}, nil
}

func errIf(s string) error {
	if s == "" {
		return nil
	}
	return errors.New(s)
}

func countMap(m *sync.Map) int {
	n := 0
	m.Range(func(any, any) bool { n++; return true })
	return n
}

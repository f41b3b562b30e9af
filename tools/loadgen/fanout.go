package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/procs"
	"github.com/jobsys/jobs/pkg/store"
)

// fanoutFigures is the fan-out phase in the JSON.
type fanoutFigures struct {
	Clients        int     `json:"clients"`
	Connected      int     `json:"connected"`
	ConnectErrors  int     `json:"connect_errors"`
	FirstError     string  `json:"first_error,omitempty"`
	ConnectSeconds float64 `json:"connect_seconds"`

	RSSBeforeMB    float64 `json:"notifier_rss_before_mb,omitempty"`
	RSSConnectedMB float64 `json:"notifier_rss_connected_mb,omitempty"`
	RSSAfterMB     float64 `json:"notifier_rss_after_mb,omitempty"`
	PerClientKB    float64 `json:"notifier_kb_per_client,omitempty"`
	LoadgenRSSMB   float64 `json:"loadgen_rss_connected_mb,omitempty"`

	GoroutinesBefore int     `json:"goroutines_before"`
	GoroutinesDuring int     `json:"goroutines_during"`
	GoroutinesAfter  int     `json:"goroutines_after"`
	SettleSeconds    float64 `json:"goroutines_settle_seconds"`

	Broadcasts int       `json:"broadcasts"`
	Missing    int       `json:"missing"`
	Latency    summary   `json:"latency_insert_to_receipt"`
	Rounds     []summary `json:"rounds"`
	Poll       string    `json:"poll_interval"`
	// Mode is the notifier's feed: changestream or poll.
	Mode string `json:"feed_mode"`
	CPU  cpuUse `json:"broadcast_cpu_cores"`
}

const (
	fanoutRounds = 3
	// connectBudget bounds the connecting, which a struggling notifier
	// can stretch far beyond the rest of the run.
	connectBudget = 90 * time.Second
	// goroutineSlack allows for the scrape's own connection and timers.
	goroutineSlack = 3
)

// fanClient is one idle subscriber. got[k] is when it received round k
// (round 0 is the unmeasured warmup).
type fanClient struct {
	c   *websocket.Conn
	got [fanoutRounds + 1]atomic.Int64
}

// fanout connects b.o.clients idle WebSocket clients subscribed to
// everything, measures the notifier's memory and goroutines, then times
// how long one completion takes to reach all of them.
func (b *bench) fanout(ctx context.Context) error {
	f := fanoutFigures{Clients: b.o.clients, Broadcasts: fanoutRounds, Poll: b.st.feedDelay.String()}
	metricsURL := b.st.notifierURL + "/metrics"
	var err error
	if f.GoroutinesBefore, err = goroutines(ctx, metricsURL); err != nil {
		return fmt.Errorf("notifier metrics: %w", err)
	}
	pid := b.st.notifierPID
	mb := func() float64 {
		if pid == 0 {
			return 0
		}
		n, err := procs.RSS(pid)
		if err != nil {
			return 0
		}
		return float64(n) / (1 << 20)
	}
	f.RSSBeforeMB = mb()

	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The broadcasts are results of jobs beanstalkd really issued, so the
	// ids stay under its counter.
	ids, err := burnIDs(ctx, b.st.beanstalkAddr, fanoutRounds+1)
	if err != nil {
		return fmt.Errorf("job ids for the broadcasts: %w", err)
	}
	roundOf := make(map[uint64]int, len(ids))
	for k, id := range ids {
		roundOf[id] = k
	}
	clients := make([]*fanClient, 0, b.o.clients)
	var (
		mu       sync.Mutex
		readers  sync.WaitGroup
		received [fanoutRounds + 1]atomic.Int64
		connErrs atomic.Int64
		firstErr atomic.Value
	)
	defer readers.Wait()
	defer cancel()
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range clients {
			c.c.CloseNow()
		}
	}()
	sub, _ := json.Marshal(job.ClientMessage{Type: job.TypeSubscribe, All: true})
	jobType := []byte(`"type":"job"`)

	// Connect with a bounded number of handshakes in flight.
	waitConnectProfile := b.profile(ctx, "fanout-connect", 10*time.Second, "notifier")
	url := wsURL(b.st.notifierURL)
	start := time.Now()
	sem := make(chan struct{}, 64)
	var dialers sync.WaitGroup
	for i := 0; i < b.o.clients && ctx.Err() == nil; i++ {
		if time.Since(start) > connectBudget {
			b.notef("fan-out: stopped connecting after %s with %d of %d clients, to stay within the run's time budget", connectBudget, i, b.o.clients)
			break
		}
		sem <- struct{}{}
		dialers.Go(func() {
			defer func() { <-sem }()
			dctx, dcancel := context.WithTimeout(rctx, 10*time.Second)
			c, _, err := websocket.Dial(dctx, url, nil)
			if err == nil {
				err = c.Write(dctx, websocket.MessageText, sub)
				if err != nil {
					c.CloseNow()
				}
			}
			dcancel()
			if err != nil {
				connErrs.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
				return
			}
			c.SetReadLimit(1 << 20)
			fc := &fanClient{c: c}
			mu.Lock()
			clients = append(clients, fc)
			n := len(clients)
			mu.Unlock()
			if n%500 == 0 {
				b.prog.set(-1, fmt.Sprintf("%d/%d clients connected", n, b.o.clients))
			}
			readers.Go(func() {
				for {
					_, data, err := c.Read(rctx)
					if err != nil {
						return
					}
					if !bytes.Contains(data, jobType) {
						continue
					}
					at := time.Now().UnixNano()
					var ev struct {
						ID uint64 `json:"id"`
					}
					if json.Unmarshal(data, &ev) != nil {
						continue
					}
					k, ok := roundOf[ev.ID]
					if ok && fc.got[k].CompareAndSwap(0, at) {
						received[k].Add(1)
					}
				}
			})
		})
	}
	dialers.Wait()
	waitConnectProfile()
	if err := ctx.Err(); err != nil {
		return err
	}
	f.ConnectSeconds = time.Since(start).Seconds()
	f.Connected, f.ConnectErrors = len(clients), int(connErrs.Load())
	if s, ok := firstErr.Load().(string); ok {
		f.FirstError = s
	}
	defer func() { b.phases[phaseFanout] = f }()
	if f.Connected == 0 {
		return fmt.Errorf("no client could connect: %s", f.FirstError)
	}
	b.prog.set(-1, fmt.Sprintf("%d clients connected, settling", f.Connected))
	// Let the subscriptions land and the notifier's memory settle.
	if err := sleepCtx(ctx, time.Second); err != nil {
		return err
	}
	f.RSSConnectedMB = mb()
	b.heapProfile(ctx, "fanout-connected", "notifier")
	if n, err := procs.RSS(os.Getpid()); err == nil {
		f.LoadgenRSSMB = float64(n) / (1 << 20)
	}
	if f.RSSBeforeMB > 0 {
		f.PerClientKB = (f.RSSConnectedMB - f.RSSBeforeMB) * 1024 / float64(f.Connected)
	}
	if f.GoroutinesDuring, err = goroutines(ctx, metricsURL); err != nil {
		return fmt.Errorf("notifier metrics: %w", err)
	}

	// Broadcast: insert a result straight into the store and time its
	// arrival at every client. Round 0 warms up and is not counted.
	m := b.st.meter()
	waitBroadcastProfile := b.profile(ctx, "fanout-broadcast", time.Duration(fanoutRounds+1)*(b.st.feedDelay+300*time.Millisecond), "notifier")
	var all []time.Duration
	results := store.NewResults(b.st.mongo, b.st.mongoDB, b.st.mongoColl)
	for k := range fanoutRounds + 1 {
		id := ids[k]
		b.prog.set(-1, fmt.Sprintf("broadcast %d/%d to %d clients", k, fanoutRounds, f.Connected))
		t0 := time.Now()
		r := job.Result{ID: id, Hash: job.Hash("{}"), Payload: "{}", Tube: "bench-fanout", Worker: "loadgen",
			Attempts: 1, StartedAt: t0.UTC(), CompletedAt: t0.UTC()}
		// Stored as a worker stores it, so the feed sees it as it would.
		if err := results.Save(ctx, r); err != nil {
			return fmt.Errorf("insert broadcast result: %w", err)
		}
		deadline := time.Now().Add(5*time.Second + 2*b.st.feedDelay)
		for received[k].Load() < int64(f.Connected) && time.Now().Before(deadline) {
			if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
				return err
			}
		}
		if k == 0 {
			continue
		}
		var lat []time.Duration
		mu.Lock()
		for _, c := range clients {
			if at := c.got[k].Load(); at != 0 {
				lat = append(lat, time.Duration(at-t0.UnixNano()))
			}
		}
		mu.Unlock()
		f.Missing += f.Connected - len(lat)
		all = append(all, lat...)
		f.Rounds = append(f.Rounds, summarize(lat, f.Connected-len(lat), 0))
		// Spread the rounds apart (in poll mode, over different points
		// of the poll cycle).
		if err := sleepCtx(ctx, b.st.feedDelay+37*time.Millisecond); err != nil {
			return err
		}
	}
	f.CPU = m.read()
	waitBroadcastProfile()
	f.Latency = summarize(all, f.Missing, 0)

	// Leave: close every client cleanly, then watch the goroutines fall.
	b.prog.set(-1, fmt.Sprintf("closing %d clients", f.Connected))
	mu.Lock()
	leaving := clients
	clients = nil
	mu.Unlock()
	var closers sync.WaitGroup
	csem := make(chan struct{}, 256)
	for _, c := range leaving {
		csem <- struct{}{}
		closers.Go(func() {
			defer func() { <-csem }()
			_ = c.c.Close(websocket.StatusNormalClosure, "benchmark done")
		})
	}
	closers.Wait()
	cancel()
	readers.Wait()
	left := time.Now()
	for {
		n, err := goroutines(ctx, metricsURL)
		if err == nil {
			f.GoroutinesAfter = n
			if n <= f.GoroutinesBefore+goroutineSlack {
				break
			}
		}
		if time.Since(left) > 20*time.Second {
			break
		}
		b.prog.set(-1, fmt.Sprintf("clients gone, notifier goroutines %d (before %d)", n, f.GoroutinesBefore))
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
	f.SettleSeconds = time.Since(left).Seconds()
	f.RSSAfterMB = mb()

	note := ""
	if f.Connected < f.Clients {
		note = fmt.Sprintf("only %d of %d connected (%s); ", f.Connected, f.Clients, f.FirstError)
	}
	if pid > 0 {
		b.add(maxRow(fmt.Sprintf("fan-out: notifier RSS, %d idle clients", f.Connected), "MB", f.RSSConnectedMB, 0, 400, fmtMB,
			fmt.Sprintf("%s%s before, %.1f KB per client; loadgen %s", note, fmtMB(f.RSSBeforeMB), f.PerClientKB, fmtMB(f.LoadgenRSSMB))))
	} else {
		b.add(skipRow("fan-out: notifier RSS", "NOTIFIER_PID not given for the running stack"))
	}
	f.Mode = b.feedMode(ctx)
	feed := "feed " + f.Mode + ": insert -> change stream -> every socket"
	if f.Mode != "changestream" {
		feed = "feed " + f.Mode + ": includes the wait for the next " + f.Poll + " poll"
	}
	limit := fmt.Sprintf("%s; %d receipts missing; %s", feed, f.Missing, f.CPU)
	bcast := maxRow(fmt.Sprintf("fan-out: one completion to %d clients, p99", f.Connected), "ms", f.Latency.P99, 0, 1000, fmtMS, note+limit)
	if f.Missing > 0 {
		bcast.Result = miss // a lost receipt is slower than any p99
	}
	b.add(
		bcast,
		infoRow("fan-out p50/p95/p99 (insert -> receipt)", fmtPcts(f.Latency), "—", fmt.Sprintf("%d broadcasts, %d receipts", fanoutRounds, f.Latency.Count)),
	)
	back := f.GoroutinesAfter <= f.GoroutinesBefore+goroutineSlack
	settle := fmt.Sprintf("back within %.1fs of the clients leaving", f.SettleSeconds)
	if !back {
		settle = fmt.Sprintf("still %d above the start %.0fs after the clients left", f.GoroutinesAfter-f.GoroutinesBefore, f.SettleSeconds)
	}
	b.add(row{Measure: "notifier goroutines before/during/after", Ratio: "—", Floor: "—",
		Ours:   fmt.Sprintf("%d / %d / %d", f.GoroutinesBefore, f.GoroutinesDuring, f.GoroutinesAfter),
		Target: fmt.Sprintf("after <= before+%d", goroutineSlack), Result: verdict(back), Limit: settle})
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/procs"
)

// replayFigures is the replay phase in the JSON.
type replayFigures struct {
	Clients  int   `json:"clients"`
	Results  int64 `json:"results"`
	Complete int   `json:"complete"`
	Refused  int64 `json:"refusals_503"`
	// Gaps counts the replays that stopped short and were read on from
	// their cursor.
	Gaps    int64   `json:"gaps"`
	Failed  int     `json:"failed"`
	Seconds float64 `json:"seconds"`
	PerConn summary `json:"time_to_full_replay"`
	CPU     cpuUse  `json:"cpu_cores"`
	// NotifierRSS is the notifier's peak resident memory during the phase.
	NotifierRSS int64 `json:"notifier_peak_rss_bytes"`
}

// replayClients is how many clients ask for a full replay at once: more
// than the notifier serves at once (NOTIFIER_MAX_REPLAYS, 4 by default),
// so the phase goes past the limit.
const replayClients = 10

// replay fills the results and has replayClients WebSockets each replay
// all of them (?since=0-0) at once, as clients reconnecting after an
// outage do. A client refused with 503 waits its Retry-After and asks
// again. It measures how long each took to get its whole replay, how
// often the notifier refused, and what it cost.
func (b *bench) replay(ctx context.Context) error {
	n := int64(min(idleResults, max(b.o.jobs/2, 200)))
	filler, err := b.fillResults(ctx, n)
	defer func() { _ = b.removeResults(context.WithoutCancel(ctx), filler) }()
	if err != nil {
		return err
	}
	total, err := b.st.results().EstimatedDocumentCount(ctx)
	if err != nil {
		return fmt.Errorf("count results: %w", err)
	}
	f := replayFigures{Clients: replayClients, Results: total}
	defer func() { b.phases[phaseReplay] = f }()

	var (
		refused atomic.Int64
		gaps    atomic.Int64
		peak    atomic.Int64
		mu      sync.Mutex
		times   []time.Duration
		errs    []error
		wg      sync.WaitGroup
	)
	rctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	stopRSS := make(chan struct{})
	go func() {
		for {
			if pid := b.st.notifierPID; pid > 0 {
				if r, err := procs.RSS(pid); err == nil && r > peak.Load() {
					peak.Store(r)
				}
			}
			select {
			case <-stopRSS:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	m := b.st.meter()
	start := time.Now()
	b.prog.set(-1, fmt.Sprintf("%d clients replaying %d results", replayClients, total))
	for range replayClients {
		wg.Go(func() {
			t0 := time.Now()
			got, err := replayAll(rctx, wsURL(b.st.notifierURL), total, &refused, &gaps)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				errs = append(errs, err)
			case int64(got) < total:
				errs = append(errs, fmt.Errorf("replayed %d of %d results", got, total))
			default:
				times = append(times, time.Since(t0))
			}
		})
	}
	wg.Wait()
	close(stopRSS)
	f.Seconds = time.Since(start).Seconds()
	f.CPU = m.read()
	f.Refused, f.Gaps, f.Complete, f.Failed, f.NotifierRSS = refused.Load(), gaps.Load(), len(times), len(errs), peak.Load()
	f.PerConn = summarize(times, len(errs), time.Since(start))
	limit := fmt.Sprintf("%d refusals (503, Retry-After) past NOTIFIER_MAX_REPLAYS, %d gaps followed; notifier peak RSS %.0f MB; %s",
		f.Refused, f.Gaps, float64(f.NotifierRSS)/1e6, f.CPU.String())
	if len(errs) > 0 {
		limit = fmt.Sprintf("%d clients failed (%v); ", len(errs), errs[0]) + limit
	}
	b.add(infoRow(fmt.Sprintf("replays: %d clients at once, ?since=0-0 over %d results", replayClients, total),
		fmt.Sprintf("%d complete in %.1f s", f.Complete, f.Seconds), "—", limit),
		infoRow("replay time per client p50/p95/p99", fmtPcts(f.PerConn), "—", "from the first dial to the last completion of the replay, waits after 503s included"))
	return nil
}

// replayAll dials base?since=0-0 until the notifier takes it, counting
// its 503s, and reads completions until it has want of them or
// replayQuiet passes without one. A gap (the replay stopped short) is
// followed as PROTOCOL.md says: reconnect with since=<its cursor>.
func replayAll(ctx context.Context, base string, want int64, refused, gaps *atomic.Int64) (int, error) {
	got, since := 0, "0-0"
	for {
		c, resp, err := websocket.Dial(ctx, base+"?since="+since, nil)
		if err != nil {
			if resp != nil && resp.StatusCode == http.StatusServiceUnavailable {
				refused.Add(1)
				if err := sleepCtx(ctx, time.Second); err != nil {
					return got, err
				}
				continue
			}
			return got, fmt.Errorf("connect: %w", err)
		}
		c.SetReadLimit(1 << 20)
		gap, err := readReplay(ctx, c, want, &got)
		c.CloseNow()
		if err != nil || gap == "" {
			return got, err
		}
		gaps.Add(1)
		since = gap
	}
}

// readReplay counts completions into got until it has want, the replay
// ends with a gap (its cursor returned), or replayQuiet passes.
func readReplay(ctx context.Context, c *websocket.Conn, want int64, got *int) (gap string, err error) {
	last := time.Now()
	for int64(*got) < want {
		if time.Since(last) > replayQuiet {
			return "", nil
		}
		rctx, cancel := context.WithTimeout(ctx, replayQuiet)
		_, data, err := c.Read(rctx)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			return "", nil
		}
		if err != nil {
			return "", fmt.Errorf("read: %w", err)
		}
		var ev job.Event
		if json.Unmarshal(data, &ev) != nil {
			continue
		}
		switch {
		case ev.Type == job.TypeJob && ev.State == job.StateCompleted:
			*got, last = *got+1, time.Now()
		case ev.Type == job.TypeGap && ev.Cursor != "":
			return string(ev.Cursor), nil
		case ev.Type == job.TypeGap:
			return "", fmt.Errorf("a gap without a cursor: %s", ev.Error)
		}
	}
	return "", nil
}

// replayQuiet is how long a replay may send nothing before the client
// gives up: a page of a replay reads the collection, which on FerretDB
// takes seconds when several run at once.
const replayQuiet = 30 * time.Second

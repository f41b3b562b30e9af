package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/procs"
	"github.com/jobsys/jobs/pkg/testenv"
)

// metric returns the value of the sample line that starts with name, or
// -1 when the notifier does not answer. It is safe in Eventually
// conditions: it never stops the test.
func metric(t *testing.T, base, name string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return -1
			}
			return f
		}
	}
	t.Errorf("metric %s not found", name)
	return -1
}

// quantiles reads the push latency histogram and returns its p50 and p99
// the way PromQL's histogram_quantile does (linear within a bucket).
func quantiles(t *testing.T, base string) (p50, p99 time.Duration, count float64) {
	t.Helper()
	_, body := get(t, base+"/metrics", nil)
	re := regexp.MustCompile(`^notifier_push_latency_seconds_bucket\{le="([^"]+)"\} (\S+)$`)
	type bucket struct{ le, n float64 }
	var bs []bucket
	for _, line := range strings.Split(body, "\n") {
		m := re.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		le, _ := strconv.ParseFloat(m[1], 64)
		if m[1] == "+Inf" {
			le = math.Inf(1)
		}
		n, _ := strconv.ParseFloat(m[2], 64)
		bs = append(bs, bucket{le, n})
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].le < bs[j].le })
	require.NotEmpty(t, bs)
	count = bs[len(bs)-1].n
	q := func(q float64) time.Duration {
		rank := q * count
		prevLe, prevN := 0.0, 0.0
		for _, b := range bs {
			if b.n >= rank {
				if math.IsInf(b.le, 1) {
					return time.Duration(prevLe * float64(time.Second))
				}
				f := prevLe + (b.le-prevLe)*(rank-prevN)/math.Max(b.n-prevN, 1)
				return time.Duration(f * float64(time.Second))
			}
			prevLe, prevN = b.le, b.n
		}
		return 0
	}
	return q(0.5), q(0.99), count
}

// bigResults stores n results with payloads of size bytes, fast.
func (b bundle) bigResults(t *testing.T, first uint64, n, size int) {
	t.Helper()
	payload := `{"pad":"` + strings.Repeat("x", size) + `"}`
	docs := make([]any, 0, 500)
	flush := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		_, err := b.Store.Collection().InsertMany(ctx, docs)
		require.NoError(t, err)
		docs = docs[:0]
	}
	for i := range n {
		now := time.Now().UTC().Truncate(time.Millisecond)
		// Stamped here as the database would (Results.Save does it one
		// document at a time).
		docs = append(docs, job.Result{ID: first + uint64(i), Hash: job.Hash(payload), Payload: payload, Tube: "default",
			Worker: "test", Attempts: 1, StartedAt: now, CompletedAt: now, DurationMS: 1, StoredAt: now})
		if len(docs) == cap(docs) {
			flush()
		}
	}
	if len(docs) > 0 {
		flush()
	}
}

func TestAClientThatNeverReadsIsDroppedAndOthersKeepReceiving(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// A queue of 128, so the drop comes soon after the slow client's
	// socket buffers fill; a short lookback, so polls do not re-read
	// megabytes.
	n := start(t, b, map[string]string{"NOTIFIER_CLIENT_BUFFER": "128", "NOTIFIER_POLL_LOOKBACK": "200ms"})
	fast := dial(t, n.ws(""), nil)
	subscribeAll(fast)

	// The slow client reads nothing, through a small receive buffer.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dialer := &net.Dialer{}
	slow, _, err := websocket.Dial(ctx, n.ws(""), &websocket.DialOptions{HTTPClient: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err == nil {
				_ = c.(*net.TCPConn).SetReadBuffer(4 << 10)
			}
			return c, err
		},
	}}})
	require.NoError(t, err)
	slow.SetReadLimit(1 << 20)
	t.Cleanup(func() { _ = slow.CloseNow() })
	// Subscribe, and read the answer to a bad message that follows: then
	// the subscription is in place. After that, it reads nothing.
	require.NoError(t, slow.Write(ctx, websocket.MessageText, []byte(`{"type":"subscribe","all":true}`)))
	require.NoError(t, slow.Write(ctx, websocket.MessageText, []byte(`{}`)))
	for {
		_, data, err := slow.Read(ctx)
		require.NoError(t, err)
		var ev job.Event
		require.NoError(t, json.Unmarshal(data, &ev))
		if ev.Type == job.TypeError {
			break
		}
	}

	// 12.5 MiB: more than the server's socket buffer can take (4 MiB at
	// most) plus the queue (4 MiB), at 2.5 MiB/s, which a reading client
	// keeps up with even on a busy machine.
	const total = 400
	for i := 0; i < total; i += 8 {
		b.bigResults(t, uint64(i+1), 8, 32<<10)
		time.Sleep(100 * time.Millisecond)
	}
	require.Equal(t, seq(1, total), sorted(ids(fast.collect(total, 60*time.Second))), "the fast client gets everything")
	// Its queue overflowed (a policy-violation close is sent, stuck behind
	// the write in progress) or its write timed out first: either way the
	// notifier closed it.
	require.Eventually(t, func() bool {
		return metric(t, n.base, `notifier_clients_dropped_total{reason="slow"}`)+
			metric(t, n.base, `notifier_clients_dropped_total{reason="write_timeout"}`) >= 1
	}, 20*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool { return metric(t, n.base, `notifier_clients{transport="ws"}`) == 1 }, 10*time.Second, 50*time.Millisecond)
	t.Logf("the client that never read was dropped: slow=%v write_timeout=%v",
		metric(t, n.base, `notifier_clients_dropped_total{reason="slow"}`), metric(t, n.base, `notifier_clients_dropped_total{reason="write_timeout"}`))
	fast.quiet(100 * time.Millisecond)
}

// A client that cannot take a burst (its queue is smaller) is closed with
// StatusPolicyViolation; its socket is not full, so the close frame
// reaches it after the frames that fit.
func TestAClientThatFallsBehindIsClosedWithPolicyViolation(t *testing.T) {
	t.Parallel()
	b := setup(t)
	n := start(t, b, map[string]string{"NOTIFIER_CLIENT_BUFFER": "4"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	since := job.NewCursor(time.Now(), 0)
	slow, _, err := websocket.Dial(ctx, n.ws("?since="+string(since)), nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = slow.CloseNow() })
	require.Eventually(t, func() bool { return metric(t, n.base, `notifier_clients{transport="ws"}`) == 1 }, 5*time.Second, 20*time.Millisecond)

	b.bigResults(t, 1, 100, 10)
	require.Eventually(t, func() bool {
		return metric(t, n.base, `notifier_clients_dropped_total{reason="slow"}`) == 1
	}, 20*time.Second, 20*time.Millisecond)
	frames := 0
	for {
		_, _, err := slow.Read(ctx)
		if err != nil {
			require.Equal(t, websocket.StatusPolicyViolation, websocket.CloseStatus(err), "%v", err)
			break
		}
		frames++
	}
	require.Less(t, frames, 100)
}

// TestPushLatencyWhenPolling measures, in the default polling setup, the
// time from completed_at to the frame being written, from the metrics
// histogram. It is a measurement for the report, not a timed assertion.
func TestPushLatencyWhenPolling(t *testing.T) {
	t.Parallel()
	b := setup(t)
	n := start(t, b, map[string]string{"NOTIFIER_POLL_INTERVAL": "250ms"})
	c := dial(t, n.ws(""), nil)
	subscribeAll(c)
	const total = 200
	go func() {
		for i := range total {
			_ = b.Store.Save(context.Background(), result(uint64(i+1), time.Now()))
			time.Sleep(10 * time.Millisecond)
		}
	}()
	c.collect(total, 60*time.Second)
	var p50, p99 time.Duration
	require.Eventually(t, func() bool {
		var count float64
		p50, p99, count = quantiles(t, n.base)
		return count == total
	}, 5*time.Second, 20*time.Millisecond)
	t.Logf("push latency, polling every 250ms, %d completions, 1 client: p50 %s, p99 %s", total, p50.Round(time.Millisecond), p99.Round(time.Millisecond))
}

// TestThousandClients connects 1,000 WebSocket clients to a notifier
// binary, checks that each gets every broadcast completion, and reports
// the notifier's memory and the push latency.
func TestThousandClients(t *testing.T) {
	t.Parallel()
	b := setup(t)
	env := b.env(0, map[string]string{"LOG_LEVEL": "warn", "NOTIFIER_POLL_INTERVAL": "250ms"})
	svc := testenv.ServeService(t, testenv.Build(t, "./services/notifier"), procs.Notifier, env)
	svc.HealthURL = svc.URL + "/readyz"
	require.NoError(t, svc.Wait())
	base := svc.URL
	n := &notifier{base: base}

	rss0 := metric(t, base, "process_resident_memory_bytes")
	heap0 := metric(t, base, "go_memstats_heap_inuse_bytes")

	const clients = 1000
	conns := make([]*websocket.Conn, clients)
	var got [clients]atomic.Int32
	var subscribed atomic.Int32
	var wg, readers sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := range clients {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c, _, err := websocket.Dial(ctx, n.ws(""), nil)
			if err != nil {
				t.Errorf("client %d: %v", i, err)
				return
			}
			conns[i] = c
			// Subscribe, and know it is done from the answer to a bad
			// message that follows.
			for _, m := range []string{`{"type":"subscribe","all":true}`, `{}`} {
				if err := c.Write(ctx, websocket.MessageText, []byte(m)); err != nil {
					t.Errorf("client %d: %v", i, err)
					return
				}
			}
			readers.Go(func() {
				for {
					_, data, err := c.Read(context.Background())
					if err != nil {
						return
					}
					var ev job.Event
					if json.Unmarshal(data, &ev) != nil {
						continue
					}
					switch {
					case ev.Type == job.TypeError:
						subscribed.Add(1)
					case ev.State == job.StateCompleted:
						got[i].Add(1)
					}
				}
			})
		})
	}
	wg.Wait()
	require.False(t, t.Failed())
	t.Cleanup(func() {
		for _, c := range conns {
			_ = c.CloseNow()
		}
		readers.Wait()
	})
	require.Eventually(t, func() bool { return subscribed.Load() == clients }, 30*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool { return metric(t, base, `notifier_clients{transport="ws"}`) == clients }, 20*time.Second, 50*time.Millisecond)
	rss1 := metric(t, base, "process_resident_memory_bytes")
	heap1 := metric(t, base, "go_memstats_heap_inuse_bytes")
	goroutines := metric(t, base, "go_goroutines")

	const broadcasts = 5
	for i := range broadcasts {
		require.NoError(t, b.Store.Save(context.Background(), result(uint64(i+1), time.Now())))
		time.Sleep(50 * time.Millisecond)
	}
	require.Eventually(t, func() bool {
		for i := range got {
			if got[i].Load() < broadcasts {
				return false
			}
		}
		return true
	}, 30*time.Second, 50*time.Millisecond, "every client gets every broadcast")
	for i := range got {
		require.EqualValues(t, broadcasts, got[i].Load(), "client %d: exactly once", i)
	}
	// The server observes a latency just after the write the client may
	// already have read.
	var p50, p99 time.Duration
	var count float64
	require.Eventually(t, func() bool {
		p50, p99, count = quantiles(t, base)
		return count == clients*broadcasts
	}, 5*time.Second, 20*time.Millisecond, "latencies observed: %v", &count)
	t.Logf("1,000 clients: notifier RSS %.1f MiB -> %.1f MiB (%.1f KiB per client), Go heap in use %.1f -> %.1f MiB, %d goroutines",
		rss0/(1<<20), rss1/(1<<20), (rss1-rss0)/clients/1024, heap0/(1<<20), heap1/(1<<20), int(goroutines))
	t.Logf("1,000 clients x %d completions, polling every 250ms: push latency p50 %s, p99 %s",
		broadcasts, p50.Round(time.Millisecond), p99.Round(time.Millisecond))
}

// A peer that stops answering pings (its process hung, its network gone
// without a FIN) is disconnected after one ping interval; a peer that
// reads, and so answers them, stays.
func TestAPeerThatDoesNotAnswerPingsIsDisconnected(t *testing.T) {
	t.Parallel()
	b := setup(t)
	n := start(t, b, map[string]string{"NOTIFIER_PING_INTERVAL": "200ms"})
	alive := dial(t, n.ws(""), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	mute, _, err := websocket.Dial(ctx, n.ws(""), nil) // never reads, so never pongs
	require.NoError(t, err)
	t.Cleanup(func() { _ = mute.CloseNow() })
	require.Eventually(t, func() bool { return metric(t, n.base, `notifier_clients{transport="ws"}`) == 2 }, 5*time.Second, 20*time.Millisecond)

	require.Eventually(t, func() bool { return metric(t, n.base, `notifier_clients{transport="ws"}`) == 1 }, 5*time.Second, 20*time.Millisecond)
	_, _, err = mute.Read(ctx)
	require.Error(t, err, "the server closed the mute peer")

	// Five more ping rounds: the reading peer is still there and served.
	time.Sleep(time.Second)
	require.Equal(t, 1.0, metric(t, n.base, `notifier_clients{transport="ws"}`))
	require.NoError(t, alive.err)
	alive.send(`{"type":"subscribe","jobs":[424242]}`)
	ev := alive.next(5 * time.Second)
	require.Equal(t, job.TypeError, ev.Type, "%+v", ev)
	require.Equal(t, "job 424242 not found", ev.Error)
}

// replayOnce opens /events?since=0-0 and reads want completions, in
// cursor order and without a gap. A 503 is returned as refused (with its
// Retry-After checked), anything else that goes wrong as an error.
func replayOnce(base string, want int) (refused bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/events?since=0-0", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusServiceUnavailable {
		var body map[string]string
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body["error"] != "too many replays" || resp.Header.Get("Retry-After") != "1" {
			return false, fmt.Errorf("a 503 without the replay refusal: %v %v", body, resp.Header)
		}
		return true, nil
	}
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("status %d", resp.StatusCode)
	}
	var last job.Cursor
	got := 0
	for ev := range readSSE(resp.Body) {
		switch ev.event {
		case "gap":
			return false, fmt.Errorf("gap after %d: %s", got, ev.data)
		case "job":
			if last != "" && compareCursor(last, job.Cursor(ev.id)) >= 0 {
				return false, fmt.Errorf("out of order: %s after %s", ev.id, last)
			}
			last = job.Cursor(ev.id)
			if got++; got == want {
				return false, nil
			}
		}
	}
	return false, fmt.Errorf("stream ended after %d of %d", got, want)
}

// Ten clients replay a large collection at once, past NOTIFIER_MAX_REPLAYS
// (2): those over the limit are refused with 503 and Retry-After, retry as
// it says, and every one gets the whole replay, in order, without a gap.
// (Ten such replays at once used to time out all together.)
func TestConcurrentReplaysPastTheLimitAllComplete(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const results, clients = 1000, 10
	b.bigResults(t, 1, results, 4<<10) // 4 MiB
	n := start(t, b, map[string]string{"NOTIFIER_MAX_REPLAYS": "2"})

	start := time.Now()
	var refusals atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for range clients {
		wg.Go(func() {
			for {
				refused, err := replayOnce(n.base, results)
				if err != nil || !refused {
					errs <- err
					return
				}
				refusals.Add(1)
				time.Sleep(time.Second) // Retry-After: 1
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	t.Logf("%d clients replayed %d results (4 MiB) each, 2 at once, in %s; %d refusals with 503",
		clients, results, time.Since(start).Round(time.Millisecond), refusals.Load())
	require.Equal(t, float64(refusals.Load()), metric(t, n.base, `notifier_connections_rejected_total{reason="max_replays"}`))
}

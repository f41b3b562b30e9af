package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/procs"
	"github.com/jobsys/jobs/pkg/queue"
	"github.com/jobsys/jobs/pkg/testenv"
)

func TestPercentileIsNearestRank(t *testing.T) {
	t.Parallel()
	var s []time.Duration
	for i := 1; i <= 100; i++ {
		s = append(s, time.Duration(i)*time.Millisecond)
	}
	tests := []struct {
		p    float64
		want time.Duration
	}{
		{50, 50 * time.Millisecond},
		{95, 95 * time.Millisecond},
		{99, 99 * time.Millisecond},
		{99.9, 100 * time.Millisecond},
		{100, 100 * time.Millisecond},
		{0.1, 1 * time.Millisecond},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, percentile(s, tt.p), "p%v", tt.p)
	}
	require.Equal(t, time.Duration(0), percentile(nil, 99))
	require.Equal(t, 7*time.Second, percentile([]time.Duration{7 * time.Second}, 50))
	// Two samples: the median is the lower one, p99 the upper.
	two := []time.Duration{time.Second, 2 * time.Second}
	require.Equal(t, time.Second, percentile(two, 50))
	require.Equal(t, 2*time.Second, percentile(two, 99))
}

func TestSummarizeSortsAndRates(t *testing.T) {
	t.Parallel()
	s := summarize([]time.Duration{3 * time.Millisecond, time.Millisecond, 2 * time.Millisecond, 4 * time.Millisecond}, 1, 2*time.Second)
	require.Equal(t, 4, s.Count)
	require.Equal(t, 1, s.Errors)
	require.InDelta(t, 2.0, s.Rate, 1e-9)
	require.InDelta(t, 2.0, s.P50, 1e-9)
	require.InDelta(t, 4.0, s.P99, 1e-9)
	require.InDelta(t, 4.0, s.Max, 1e-9)
	require.Zero(t, summarize(nil, 0, 0).Rate)
}

func TestHammerCountsOnlyTheWindowAndClosesLoops(t *testing.T) {
	t.Parallel()
	var ops, closed atomic.Int64
	s, err := hammer(context.Background(), hammerConfig{conc: 4, warmup: 20 * time.Millisecond, d: 50 * time.Millisecond},
		func(ctx context.Context, i int) (loop, error) {
			return loop{
				op:    func(context.Context) error { ops.Add(1); time.Sleep(time.Millisecond); return nil },
				close: func() { closed.Add(1) },
			}, nil
		})
	require.NoError(t, err)
	require.Positive(t, s.Count)
	require.Less(t, int64(s.Count), ops.Load(), "warmup operations are not counted")
	require.Equal(t, int64(4), closed.Load())
	require.Zero(t, s.Errors)
}

func TestHammerReportsFailures(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	_, err := hammer(context.Background(), hammerConfig{conc: 2, d: 20 * time.Millisecond},
		func(ctx context.Context, i int) (loop, error) {
			return loop{op: func(context.Context) error { time.Sleep(time.Millisecond); return boom }, close: func() {}}, nil
		})
	require.ErrorIs(t, err, boom, "nothing succeeded: the first error is returned")

	var closed atomic.Int64
	_, err = hammer(context.Background(), hammerConfig{conc: 3, d: time.Millisecond},
		func(ctx context.Context, i int) (loop, error) {
			if i == 2 {
				return loop{}, boom
			}
			return loop{op: func(context.Context) error { return nil }, close: func() { closed.Add(1) }}, nil
		})
	require.ErrorIs(t, err, boom)
	require.Equal(t, int64(2), closed.Load(), "loops made before the failure are closed")
}

func TestHammerStopsOnCancel(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := hammer(ctx, hammerConfig{conc: 2, d: time.Hour}, func(ctx context.Context, i int) (loop, error) {
		return loop{op: func(ctx context.Context) error { return ctx.Err() }, close: func() {}}, nil
	})
	require.ErrorIs(t, err, context.Canceled)
}

func TestRowsVerdicts(t *testing.T) {
	t.Parallel()
	r := rateRow("ingest", "req/s", 4000, 10000, 0.40, "x")
	require.Equal(t, pass, r.Result)
	require.Equal(t, "40%", r.Ratio)
	require.Equal(t, ">= 40%", r.Target)
	require.Equal(t, miss, rateRow("ingest", "req/s", 3999, 10000, 0.40, "").Result)
	require.Empty(t, rateRow("info", "req/s", 1, 2, 0, "").Result, "no target, no verdict")
	require.Equal(t, "—", rateRow("no floor", "req/s", 1, 0, 0.5, "").Ratio)

	m := maxRow("p99", "ms", 275, 0, 275, fmtMS, "")
	require.Equal(t, pass, m.Result)
	require.Equal(t, "<= 275 ms", m.Target)
	require.Equal(t, miss, maxRow("p99", "ms", 275.1, 0, 275, fmtMS, "").Result)
}

func TestWriteTableAligns(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	require.NoError(t, writeTable(&buf, []row{
		rateRow("ingest: POST /", "req/s", 4000, 10000, 0.40, "cpu manager 0.90"),
		infoRow("latency", "1.0 / 2.0 / 3.0 ms", "—", ""),
	}))
	lines := strings.Split(strings.TrimRight(buf.String(), "\n"), "\n")
	require.Len(t, lines, 4)
	require.True(t, strings.HasPrefix(lines[0], "measure"))
	require.True(t, strings.HasPrefix(lines[1], "---"))
	// Every column starts at the same rune offset on every line.
	col := strings.Index(lines[0], "ours")
	for _, l := range []string{lines[2], lines[3]} {
		require.Equal(t, ' ', []rune(l)[col-1], "line %q", l)
		require.NotEqual(t, ' ', []rune(l)[col], "line %q", l)
	}
	require.Contains(t, lines[2], "4000/s")
	require.Contains(t, lines[2], "PASS")
	require.True(t, strings.HasSuffix(lines[2], "cpu manager 0.90"))
	for _, l := range lines {
		require.Equal(t, strings.TrimRight(l, " "), l, "no trailing blanks")
	}
}

func TestWriteJSONRoundTrip(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "deep", "bench.json")
	in := report{StartedAt: time.Unix(1700000000, 0).UTC(), TotalSeconds: 12.5, Machine: machine{NumCPU: 2},
		Rows: []row{rateRow("ingest", "req/s", 1, 2, 0.6, "")}, Phases: map[string]any{"ingest": ingestFigures{Conc: 32}}}
	require.NoError(t, writeJSON(path, in))
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var out struct {
		TotalSeconds float64 `json:"total_seconds"`
		Rows         []row   `json:"rows"`
		Phases       map[string]struct {
			Conc int `json:"concurrency"`
		} `json:"phases"`
	}
	require.NoError(t, json.Unmarshal(b, &out))
	require.InDelta(t, 12.5, out.TotalSeconds, 1e-9)
	require.Equal(t, miss, out.Rows[0].Result)
	require.InDelta(t, 0.5, *out.Rows[0].RatioValue, 1e-9)
	require.Equal(t, 32, out.Phases["ingest"].Conc)
}

func TestProgressLine(t *testing.T) {
	t.Parallel()
	start := time.Unix(1000, 0)
	p := &progress{mode: "off", start: start, total: 100 * time.Second}
	require.Equal(t, "[........................]   0%     0s", p.line(start))

	p.doneEst = 50 * time.Second
	p.step, p.stepStart, p.stepEst, p.frac, p.detail = "lookup", start.Add(60*time.Second), 20*time.Second, 0.5, "GET queued"
	require.Equal(t, "[##############..........]  60%   1m5s  lookup: GET queued", p.line(start.Add(65*time.Second)))

	// Without a fraction the step's elapsed time stands in, capped at 95%
	// of its estimate.
	p.frac = -1
	require.Contains(t, p.line(start.Add(1000*time.Second)), " 69% ")
}

func TestProgressModes(t *testing.T) {
	t.Parallel()
	var lines bytes.Buffer
	p := newProgress(&lines, "lines", time.Minute)
	p.begin("ingest", 10*time.Second)
	p.logf("note %d", 1)
	p.end()
	p.close()
	require.Contains(t, lines.String(), "ingest\n")
	require.Contains(t, lines.String(), "loadgen: note 1\n")
	require.NotContains(t, lines.String(), "\r", "lines mode never rewrites a line")

	var bar bytes.Buffer
	p = newProgress(&bar, "bar", time.Minute)
	p.begin("ingest", 10*time.Second)
	p.logf("note")
	p.close()
	require.Contains(t, bar.String(), "\r")
	require.True(t, strings.HasSuffix(bar.String(), "\r\x1b[K"), "the bar is cleared at the end")

	var off bytes.Buffer
	p = newProgress(&off, "off", time.Minute)
	p.begin("x", time.Second)
	p.logf("quiet")
	p.close()
	require.Empty(t, off.String())
	require.Equal(t, "lines", progressMode("auto", nil), "not a terminal")
}

func TestParseOptions(t *testing.T) {
	t.Parallel()
	none := func(string) string { return "" }
	o, err := parseOptions(nil, none, &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, allPhases, o.phases)
	require.Equal(t, 8*time.Second, o.duration)
	require.Equal(t, 5000, o.jobs)
	require.Equal(t, 10000, o.clients)
	require.Equal(t, 32, o.conc)
	require.Equal(t, "artifacts/bench.json", o.out)
	require.False(t, o.useStack)

	o, err = parseOptions([]string{"-only", "fanout, ingest,ingest", "-duration", "2s", "-out", "x.json"}, none, &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, []string{phaseIngest, phaseFanout}, o.phases, "run order, no repeats")
	require.Zero(t, o.e2eRate, "half the drain rate unless told")
	o, err = parseOptions([]string{"-e2e-rate", "250"}, none, &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, 250.0, o.e2eRate)

	bad := []struct {
		args []string
		want string
	}{
		{[]string{"-duration", "10ms"}, "-duration"},
		{[]string{"-jobs", "0"}, "-jobs"},
		{[]string{"-clients", "0"}, "-clients"},
		{[]string{"-c", "0"}, "-c 0"},
		{[]string{"-only", "ingest,nope"}, `unknown phase "nope"`},
		{[]string{"-only", ","}, "no phase"},
		{[]string{"-progress", "fancy"}, "-progress"},
		{[]string{"-out", ""}, "-out"},
		{[]string{"-e2e-rate", "-1"}, "-e2e-rate"},
		{[]string{"extra"}, "unexpected arguments"},
	}
	for _, tt := range bad {
		_, err := parseOptions(tt.args, none, &bytes.Buffer{})
		require.ErrorContains(t, err, tt.want, "args %q", tt.args)
	}
	// All problems at once.
	_, err = parseOptions([]string{"-jobs", "0", "-clients", "0"}, none, &bytes.Buffer{})
	require.ErrorContains(t, err, "-jobs")
	require.ErrorContains(t, err, "-clients")
}

func TestParseOptionsUseStack(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		"BENCH_USE_STACK": "1", "BEANSTALK_HOST": "10.0.0.1", "BEANSTALK_PORT": "11301",
		"MONGO_URL": "mongodb://10.0.0.2:27017", "MONGO_DB": "jobs", "MONGO_COLLECTION": "done",
		"MANAGER_URL": "http://10.0.0.3:8080/", "NOTIFIER_URL": "http://10.0.0.4:8083",
		"NOTIFIER_FEED_DELAY": "100ms", "NOTIFIER_PID": "42",
	}
	o, err := parseOptions(nil, func(k string) string { return env[k] }, &bytes.Buffer{})
	require.NoError(t, err)
	require.True(t, o.useStack)
	require.Equal(t, "10.0.0.1:11301", o.beanstalkAddr)
	require.Equal(t, "done", o.mongoColl)
	require.Equal(t, "http://10.0.0.3:8080", o.managerURL)
	require.Equal(t, 100*time.Millisecond, o.feedDelay)
	require.Equal(t, 42, o.notifierPID)
	require.Equal(t, "default", o.tube)

	env = map[string]string{"BENCH_USE_STACK": "1", "BEANSTALK_PORT": "x", "MONGO_URL": "http://nope",
		"MANAGER_URL": "ftp://a", "NOTIFIER_FEED_DELAY": "soon", "BENCH_TUBE": "-bad"}
	_, err = parseOptions(nil, func(k string) string { return env[k] }, &bytes.Buffer{})
	for _, name := range []string{"BEANSTALK_PORT", "MONGO_URL", "MANAGER_URL", "NOTIFIER_FEED_DELAY", "BENCH_TUBE"} {
		require.ErrorContains(t, err, name)
	}
}

func TestProcParsers(t *testing.T) {
	t.Parallel()
	// The /proc readers live in pkg/procs, tested there.
	g, err := parseMetric([]byte("# HELP go_goroutines Number of goroutines.\n# TYPE go_goroutines gauge\ngo_goroutines_total 3\ngo_goroutines 17\n"), "go_goroutines")
	require.NoError(t, err)
	require.Equal(t, 17.0, g)
	_, err = parseMetric([]byte("go_threads 3\n"), "go_goroutines")
	require.Error(t, err)
	lookups := []byte("notifier_store_lookups_total{by=\"subscribe\"} 4\nnotifier_store_lookups_total{by=\"tracker\"} 2\n")
	v, err := parseMetric(lookups, `notifier_store_lookups_total{by="tracker"}`)
	require.NoError(t, err)
	require.Equal(t, 2.0, v)
	_, err = parseMetric(lookups, `notifier_store_lookups_total{by="other"}`)
	require.Error(t, err)
}

func TestCPUUseString(t *testing.T) {
	t.Parallel()
	require.Equal(t, "cpu manager 0.90, loadgen 0.50", cpuUse{"loadgen": 0.5, "manager": 0.9, "other": 0.01}.String())
}

func TestWSURL(t *testing.T) {
	t.Parallel()
	require.Equal(t, "ws://127.0.0.1:8083/ws", wsURL("http://127.0.0.1:8083"))
	require.Equal(t, "wss://n.example/ws", wsURL("https://n.example/"))
}

// serveReference runs loadgen as the reference server of mode on port 0,
// followed by args, and returns the URL it prints. stop ends it and checks
// that it stopped cleanly.
func serveReference(t *testing.T, mode string, args ...string) (url string, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r, w := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{mode, "127.0.0.1:0"}, args...), func(string) string { return "" }, w, io.Discard)
		w.Close()
	}()
	line, err := bufio.NewReader(r).ReadString('\n')
	require.NoError(t, err, "the reference server printed no line")
	go func() { _, _ = io.Copy(io.Discard, r) }()
	url, ok := procs.ListeningLine(strings.TrimSpace(line))
	require.True(t, ok, "%q", line)
	require.Regexp(t, `^http://127\.0\.0\.1:[1-9][0-9]*$`, url)
	return url, func() {
		t.Helper()
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(10 * time.Second):
			t.Fatalf("%s did not stop", mode)
		}
	}
}

func TestNullHTTPAnswersLikeTheManager(t *testing.T) {
	t.Parallel()
	u, stop := serveReference(t, nullHTTPArg)
	ctx := context.Background()
	c := newHTTPClient(1)
	id, err := postJob(ctx, c, u, "t", []byte(`{"a":1}`))
	require.NoError(t, err)
	require.Equal(t, uint64(1), id)
	_, err = postJob(ctx, c, u, "", []byte(`not json`))
	require.ErrorContains(t, err, "status 400")
	body, err := getJob(ctx, c, u, 5)
	require.NoError(t, err)
	require.True(t, json.Valid(body))
	stop()
}

// The plain Echo reference answers a queued job's GET with beanstalkd's
// stats-job and an unknown one with 404, and stops with its context.
func TestPlainEchoAnswersFromBeanstalkd(t *testing.T) {
	t.Parallel()
	b := testenv.SetupClients(t)
	ctx := context.Background()
	id, err := b.Queue.Put(ctx, []byte(`{"a":1}`), queue.PutOptions{Tube: b.Tube, TTR: time.Minute})
	require.NoError(t, err)
	u, stop := serveReference(t, plainEchoArg, b.Beanstalk.Addr())

	c := newHTTPClient(1)
	for range 3 { // the pooled connection is used again
		body, err := getJob(ctx, c, u, id)
		require.NoError(t, err)
		var st map[string]string
		require.NoError(t, json.Unmarshal(body, &st))
		require.Equal(t, strconv.FormatUint(id, 10), st["id"])
		require.Equal(t, "ready", st["state"])
		require.Equal(t, b.Tube, st["tube"])
	}
	_, err = getJob(ctx, c, u, id+1_000_000)
	require.ErrorContains(t, err, "status 404")
	stop()
}

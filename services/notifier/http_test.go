package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/testenv"
)

func TestBoardFilesAreServedWithRevalidation(t *testing.T) {
	t.Parallel()
	b := setup(t)
	n := start(t, b, nil)
	resp, body := get(t, n.base+"/", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, resp.Header.Get("Content-Type"), "text/html")
	require.Contains(t, body, "<title>Job board</title>")
	require.Equal(t, "no-cache", resp.Header.Get("Cache-Control"))
	require.Equal(t, "nosniff", resp.Header.Get("X-Content-Type-Options"))
	etag := resp.Header.Get("ETag")
	require.NotEmpty(t, etag)

	resp, body = get(t, n.base+"/", http.Header{"If-None-Match": {etag}})
	require.Equal(t, http.StatusNotModified, resp.StatusCode)
	require.Empty(t, body)

	resp, _ = get(t, n.base+"/no-such-file.js", nil)
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	req, _ := http.NewRequest(http.MethodPost, n.base+"/", strings.NewReader("x"))
	r, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	r.Body.Close()
	require.Equal(t, http.StatusMethodNotAllowed, r.StatusCode)
}

func TestBoardConfig(t *testing.T) {
	t.Parallel()
	b := setup(t)
	n := start(t, b, map[string]string{"BOARD_LINKS": "mongo-express=http://localhost:8081,beanstalk console=http://localhost:8082/"})
	resp, body := get(t, n.base+"/board-config.json", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.JSONEq(t, `{"api":"/api","links":[{"name":"mongo-express","url":"http://localhost:8081"},{"name":"beanstalk console","url":"http://localhost:8082/"}]}`, body)

	n2 := start(t, b, nil)
	_, body = get(t, n2.base+"/board-config.json", nil)
	require.JSONEq(t, `{"api":"/api","links":[]}`, body)
}

// The proxy is checked against an upstream that says what it received;
// the manager itself is another service's.
func TestAPIProxyStripsThePrefixAndKeepsAuthorization(t *testing.T) {
	t.Parallel()
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(map[string]string{
			"method": r.Method, "path": r.URL.Path, "query": r.URL.RawQuery,
			"auth": r.Header.Get("Authorization"), "body": string(body), "forwarded_host": r.Header.Get("X-Forwarded-Host"),
		})
	}))
	t.Cleanup(upstream.Close)
	b := setup(t)
	n := start(t, b, map[string]string{"MANAGER_URL": upstream.URL})

	req, _ := http.NewRequest(http.MethodPost, n.base+"/api/?tube=x", strings.NewReader(`{"example":"data"}`))
	req.Header.Set("Authorization", "Bearer abc")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusCreated, resp.StatusCode)
	var got map[string]string
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&got))
	require.Equal(t, map[string]string{"method": "POST", "path": "/", "query": "tube=x", "auth": "Bearer abc",
		"body": `{"example":"data"}`, "forwarded_host": strings.TrimPrefix(n.base, "http://")}, got)

	_, body := get(t, n.base+"/api/1/", nil)
	require.Contains(t, body, `"path":"/1/"`)
}

func TestAPIProxyAnswers502WhenTheManagerIsDown(t *testing.T) {
	t.Parallel()
	// A manager that accepts and hangs up at once. (A port that was free a
	// moment ago can be taken by another test's server meanwhile.)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	b := setup(t)
	n := start(t, b, map[string]string{"MANAGER_URL": "http://" + l.Addr().String()})
	resp, body := get(t, n.base+"/api/1", nil)
	require.Equal(t, http.StatusBadGateway, resp.StatusCode)
	var got map[string]string
	require.NoError(t, json.Unmarshal([]byte(body), &got))
	require.Equal(t, "manager unreachable", got["error"])
	require.NotContains(t, body, l.Addr().String(), "no address in the answer")
}

func TestReadyzAndMetricsReportTheMode(t *testing.T) {
	t.Parallel()
	b := setup(t)
	n := start(t, b, nil)
	resp, body := get(t, n.base+"/readyz", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var ready map[string]any
	require.NoError(t, json.Unmarshal([]byte(body), &ready))
	require.Equal(t, "changestream", ready["mode"], "devmongo serves change streams, so the notifier follows one")
	require.Equal(t, "ok", ready["mongo"])
	require.Equal(t, "ok", ready["beanstalk"])

	c := dial(t, n.ws(""), nil)
	subscribeAll(c)
	wants := []string{
		`notifier_feed_mode{mode="changestream"} 1`,
		`notifier_feed_mode{mode="poll"} 0`,
		`notifier_clients{transport="ws"} 1`,
		`notifier_events_sent_total{type="error"} 1`,
		`notifier_clients_dropped_total{reason="slow"} 0`,
		`notifier_push_latency_seconds_bucket`,
		`go_goroutines`,
	}
	// The counters move as the subscription is handled: read until they
	// have, then require every line.
	var metrics string
	require.Eventually(t, func() bool {
		_, metrics = get(t, n.base+"/metrics", nil)
		for _, want := range wants {
			if !strings.Contains(metrics, want) {
				return false
			}
		}
		return true
	}, 5*time.Second, 20*time.Millisecond)
	for _, want := range wants {
		require.Contains(t, metrics, want)
	}
	require.Regexp(t, `msg="completion feed running".* mode=changestream`, n.logs.String(), "the mode is logged")
}

func TestReadinessFollowsMongoDB(t *testing.T) {
	t.Parallel()
	b := setup(t)
	own := testenv.StartMongo(t)
	b.Mongo = own
	n := start(t, b, nil)
	own.Stop()
	require.Eventually(t, func() bool {
		resp, _ := get(t, n.base+"/readyz", nil)
		return resp.StatusCode == http.StatusServiceUnavailable
	}, 15*time.Second, 100*time.Millisecond)
	resp, _ := get(t, n.base+"/healthz", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, "alive all the same")
	require.NoError(t, own.Restart())
	require.Eventually(t, func() bool {
		resp, _ := get(t, n.base+"/readyz", nil)
		return resp.StatusCode == http.StatusOK
	}, 20*time.Second, 100*time.Millisecond)
}

// readyz returns /readyz's status and body.
func readyz(t *testing.T, base string) (int, map[string]any) {
	t.Helper()
	resp, body := get(t, base+"/readyz", nil)
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(body), &m), body)
	return resp.StatusCode, m
}

// Each dependency has a deadline of its own: a MongoDB that does not
// answer is reported, and beanstalkd beside it is still "ok", and the
// other way round. Neither answer names an address.
func TestReadyzNamesTheDependencyThatIsDown(t *testing.T) {
	t.Parallel()
	b := setup(t)
	mongo := testenv.StartMongo(t)
	bs := testenv.StartBeanstalkd(t, testenv.BeanstalkdOptions{})
	b.Mongo, b.Beanstalk = mongo, bs
	n := start(t, b, nil)

	mongo.Stop()
	var body map[string]any
	require.Eventually(t, func() bool {
		var code int
		code, body = readyz(t, n.base)
		return code == http.StatusServiceUnavailable && body["mongo"] != "ok"
	}, 15*time.Second, 100*time.Millisecond)
	// Once the driver has given up on its connections, a ping waits for
	// the whole deadline: ask again.
	for range 3 {
		code, body := readyz(t, n.base)
		require.Equal(t, http.StatusServiceUnavailable, code)
		require.NotEqual(t, "ok", body["mongo"], "MongoDB is down: %v", body)
		require.Equal(t, "ok", body["beanstalk"], "beanstalkd is up: %v", body)
		require.NotContains(t, fmt.Sprint(body), mongo.Addr, "no address in the answer")
	}
	require.NoError(t, mongo.Restart())
	require.Eventually(t, func() bool {
		code, _ := readyz(t, n.base)
		return code == http.StatusOK
	}, 20*time.Second, 100*time.Millisecond)

	bs.Stop()
	require.Eventually(t, func() bool {
		_, body = readyz(t, n.base)
		return body["beanstalk"] != "ok"
	}, 15*time.Second, 100*time.Millisecond)
	code, body := readyz(t, n.base)
	require.Equal(t, http.StatusOK, code, "completions need MongoDB only: %v", body)
	require.Equal(t, "ok", body["mongo"], "MongoDB is up: %v", body)
	require.NotContains(t, fmt.Sprint(body), strconv.Itoa(bs.Port), "no address in the answer")
}

// sseEvent is one Server-Sent Event.
type sseEvent struct {
	id, event, data string
}

// readSSE reads events from body into a channel until it ends.
func readSSE(body io.Reader) <-chan sseEvent {
	out := make(chan sseEvent, 1024)
	go func() {
		defer close(out)
		sc := bufio.NewScanner(body)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.event != "" || ev.data != "" {
					out <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, ":"):
				out <- sseEvent{event: "comment", data: line}
			default:
				k, v, _ := strings.Cut(line, ": ")
				switch k {
				case "id":
					ev.id = v
				case "event":
					ev.event = v
				case "data":
					ev.data = v
				}
			}
		}
	}()
	return out
}

func openSSE(t *testing.T, url string, header http.Header) <-chan sseEvent {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	require.NoError(t, err)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	t.Cleanup(func() { resp.Body.Close() })
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	return readSSE(resp.Body)
}

// sseJobs reads n job events.
func sseJobs(t *testing.T, events <-chan sseEvent, n int) []job.Event {
	t.Helper()
	var out []job.Event
	deadline := time.After(10 * time.Second)
	for len(out) < n {
		select {
		case ev, ok := <-events:
			require.True(t, ok, "stream ended")
			if ev.event != "job" {
				continue
			}
			var je job.Event
			require.NoError(t, json.Unmarshal([]byte(ev.data), &je))
			require.Equal(t, string(je.Cursor), ev.id, "the SSE id is the cursor")
			out = append(out, je)
		case <-deadline:
			t.Fatalf("%d of %d SSE events", len(out), n)
		}
	}
	return out
}

func TestSSEReplaysFromLastEventID(t *testing.T) {
	t.Parallel()
	b := setup(t)
	n := start(t, b, nil)
	ctx := context.Background()
	base := time.Now().Add(-time.Minute)
	var results []job.Result
	for i := range 4 {
		r := result(uint64(i+1), base)
		require.NoError(t, b.insert(ctx, stamped(r, base.Add(time.Duration(i)*time.Millisecond))))
		r, err := b.Store.Find(ctx, r.ID)
		require.NoError(t, err)
		results = append(results, r)
	}
	events := openSSE(t, n.base+"/events", http.Header{"Last-Event-ID": {string(job.CursorOf(results[1]))}})
	// Rewound by the lookback (2s): 1 and 2, stamped within it, come again.
	require.Equal(t, []uint64{1, 2, 3, 4}, ids(sseJobs(t, events, 4)))
	b.complete(t, 10, 2)
	require.Equal(t, []uint64{10, 11}, sorted(ids(sseJobs(t, events, 2))))

	// ?since= works too, for a first connection.
	events = openSSE(t, n.base+"/events?since="+string(job.CursorOf(results[2])), nil)
	require.Equal(t, []uint64{4, 10, 11}, sorted(ids(sseJobs(t, events, 3))))

	resp, body := get(t, n.base+"/events?since=yesterday", nil)
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.Contains(t, body, "bad since cursor")
	resp, _ = get(t, n.base+"/ws?since=1-x", nil)
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
}

// An idle SSE stream gets a heartbeat comment every NOTIFIER_PING_INTERVAL.
func TestSSEHeartbeat(t *testing.T) {
	t.Parallel()
	b := setup(t)
	n := start(t, b, map[string]string{"NOTIFIER_PING_INTERVAL": "500ms"})
	events := openSSE(t, n.base+"/events", nil)
	deadline := time.After(5 * time.Second)
	for {
		select {
		case ev := <-events:
			if ev.event == "comment" {
				require.Equal(t, ": heartbeat", ev.data)
				return
			}
		case <-deadline:
			t.Fatal("no heartbeat within 5s")
		}
	}
}

// Every 4xx the notifier answers itself is JSON in the API's shape, and
// HEAD is served wherever GET is.
func TestErrorsAreJSONAndHEADIsServed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	n := start(t, b, nil)
	upgrade := http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-WebSocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}}
	for _, tc := range []struct {
		method, path string
		header       http.Header
		code         int
		err          string
	}{
		{http.MethodGet, "/no-such-file.js", nil, http.StatusNotFound, "not found"},
		{http.MethodGet, "/no/such/dir/", nil, http.StatusNotFound, "not found"},
		{http.MethodPost, "/", nil, http.StatusMethodNotAllowed, "method not allowed"},
		{http.MethodDelete, "/app.js", nil, http.StatusMethodNotAllowed, "method not allowed"},
		{http.MethodPost, "/ws", nil, http.StatusMethodNotAllowed, "method not allowed"},
		{http.MethodPut, "/events", nil, http.StatusMethodNotAllowed, "method not allowed"},
		{http.MethodPost, "/healthz", nil, http.StatusMethodNotAllowed, "method not allowed"},
		{http.MethodPost, "/readyz", nil, http.StatusMethodNotAllowed, "method not allowed"},
		{http.MethodPost, "/metrics", nil, http.StatusMethodNotAllowed, "method not allowed"},
		{http.MethodPost, "/board-config.json", nil, http.StatusMethodNotAllowed, "method not allowed"},
		{http.MethodGet, "/ws", nil, http.StatusUpgradeRequired, "websocket upgrade required"},
		{http.MethodGet, "/ws", upgrade, http.StatusBadRequest, "unsupported websocket version"},
		{http.MethodGet, "/ws?last=0", nil, http.StatusBadRequest, "bad last"},
		{http.MethodGet, "/events?since=x", nil, http.StatusBadRequest, "bad since cursor"},
	} {
		name := tc.method + " " + tc.path
		resp, body := do(t, tc.method, n.base+tc.path, tc.header)
		require.Equal(t, tc.code, resp.StatusCode, name)
		require.Equal(t, "application/json", resp.Header.Get("Content-Type"), name)
		var got map[string]string
		require.NoError(t, json.Unmarshal([]byte(body), &got), name+": "+body)
		require.Equal(t, tc.err, got["error"], name)
	}
	for _, path := range []string{"/", "/index.html", "/app.js", "/healthz", "/readyz", "/metrics", "/board-config.json", "/events"} {
		resp, body := do(t, http.MethodHead, n.base+path, nil)
		require.Equal(t, http.StatusOK, resp.StatusCode, path)
		require.Empty(t, body, path)
		require.NotEmpty(t, resp.Header.Get("Content-Type"), path)
	}
	require.Equal(t, 0.0, metric(t, n.base, `notifier_clients{transport="sse"}`), "HEAD /events opens no stream")
}

// A text frame that is not UTF-8 closes the connection with 1007 (RFC
// 6455 §8.1), where a bad JSON message only gets an error frame.
func TestInvalidUTF8ClosesWith1007(t *testing.T) {
	t.Parallel()
	b := setup(t)
	n := start(t, b, nil)
	c := dial(t, n.ws(""), nil)
	c.send(`{"type":"subscribe","all":tru}`)
	require.Equal(t, job.TypeError, c.next(5*time.Second).Type)
	c.send("{\"type\":\"subscribe\",\"jobs\":[1],\"x\":\"\xff\xfe\"}")
	require.Equal(t, websocket.StatusInvalidFramePayloadData, c.closed(5*time.Second))
}

// Metric labels come from fixed sets: nothing a client sends (paths,
// origins, tokens, message types, cursors) becomes a label value.
func TestMetricLabelsAreAFixedSet(t *testing.T) {
	t.Parallel()
	b := setup(t)
	n := start(t, b, map[string]string{"API_TOKEN": "s3cret", "NOTIFIER_ALLOWED_ORIGINS": "https://ok.example"})
	auth := http.Header{"Authorization": {"Bearer s3cret"}}
	for _, h := range []http.Header{
		nil,
		{"Authorization": {"Bearer evil-label"}},
		{"Origin": {"https://evil-label.example"}},
	} {
		for _, path := range []string{"/ws", "/events", "/ws?since=evil-label", "/events?last=evil-label", "/evil-label"} {
			do(t, http.MethodGet, n.base+path, h)
		}
	}
	do(t, http.MethodGet, n.base+"/ws?since=evil-label", auth)
	c := dial(t, n.ws(""), auth)
	c.send(`{"type":"evil-label","all":true}`)
	c.send(`{"type":"subscribe","jobs":[1],"evil-label":1}`)
	require.Equal(t, job.TypeError, c.next(5*time.Second).Type)
	require.Equal(t, job.TypeError, c.next(5*time.Second).Type)

	allowed := map[string][]string{
		"transport": {"ws", "sse"},
		"type":      {"job", "stats", "gap", "error"},
		"reason":    {"slow", "write_timeout", "max_clients", "max_replays", "origin", "unauthorized", "forbidden", "bad_request", "max_watches", "max_pending", "host"},
		"mode":      {"changestream", "poll"},
		"by":        {"subscribe", "tracker"},
		"from":      {"memory", "store"},
		"le":        nil, // histogram buckets: fixed by the code
	}
	_, body := get(t, n.base+"/metrics", nil)
	require.NotContains(t, body, "evil-label")
	label := regexp.MustCompile(`(\w+)="([^"]*)"`)
	seen := 0
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, "notifier_") {
			continue
		}
		for _, m := range label.FindAllStringSubmatch(line, -1) {
			values, ok := allowed[m[1]]
			require.True(t, ok, "label %s in %s", m[1], line)
			if values != nil {
				require.Contains(t, values, m[2], line)
			}
			seen++
		}
	}
	require.Positive(t, seen)
}

// The limits reach the hub from the environment: NOTIFIER_MAX_WATCHES
// over two clients, NOTIFIER_MAX_CLIENT_WATCHES for one, and
// NOTIFIER_MAX_REPLAYS=1, whose one place each
// replay gives back when it ends (the refusal past it is tested in
// internal/hub).
func TestWatchAndReplayLimitsFromTheEnvironment(t *testing.T) {
	t.Parallel()
	b := setup(t)
	n := start(t, b, map[string]string{"NOTIFIER_MAX_WATCHES": "3", "NOTIFIER_MAX_CLIENT_WATCHES": "2", "NOTIFIER_MAX_REPLAYS": "1"})
	first, second := dial(t, n.ws(""), nil), dial(t, n.ws(""), nil)
	ids := []uint64{b.put(t, "{}"), b.put(t, "{}"), b.put(t, "{}")}
	first.send(fmt.Sprintf(`{"type":"subscribe","jobs":[%d,%d]}`, ids[0], ids[1]))
	for range 2 {
		ev := first.next(5 * time.Second)
		require.Equal(t, job.StateReady, ev.State, "%+v", ev)
	}
	second.send(fmt.Sprintf(`{"type":"subscribe","jobs":[%d,%d]}`, ids[1], ids[2]))
	// The refusal is queued as the watches are taken, before the state
	// of the one that fit is looked up.
	ev := second.next(5 * time.Second)
	require.Equal(t, job.TypeError, ev.Type)
	require.Contains(t, ev.Error, "the notifier watches 3 jobs for all its clients, its limit")
	ev = second.next(5 * time.Second)
	require.Equal(t, ids[1], ev.ID)
	require.Equal(t, job.StateReady, ev.State)
	require.Equal(t, 1.0, metric(t, n.base, `notifier_connections_rejected_total{reason="max_watches"}`))
	first.send(fmt.Sprintf(`{"type":"subscribe","jobs":[%d]}`, ids[2]))
	ev = first.next(5 * time.Second)
	require.Equal(t, job.TypeError, ev.Type)
	require.Contains(t, ev.Error, "watching 2 jobs already")

	for range 3 {
		c := dial(t, n.ws("?since=0-0"), nil)
		_ = c.conn.CloseNow()
	}
}

// The board's ?last=50 on the running notifier: the 50 most recent in
// cursor order, then live completions from the feed, none twice. The
// replay is of what the notifier has published (from memory): the test
// waits until the feed has delivered the 60, as a browser opening the
// board after them would.
func TestLastFiftyThenLive(t *testing.T) {
	t.Parallel()
	b := setup(t)
	n := start(t, b, nil)
	seen := dial(t, n.ws("?since=0-0"), nil)
	b.complete(t, 1, 60)
	seen.collect(60, 10*time.Second)
	all, err := b.Store.Latest(context.Background(), 60)
	require.NoError(t, err)
	want := make([]uint64, 0, 50)
	for _, r := range all[10:] {
		want = append(want, r.ID)
	}

	c := dial(t, n.ws("?last=50"), nil)
	got := c.collect(50, 10*time.Second)
	require.Equal(t, want, ids(got), "the 50 most recent, oldest first")
	for i := 1; i < len(got); i++ {
		require.Negative(t, compareCursor(got[i-1].Cursor, got[i].Cursor), "in cursor order")
	}
	events := openSSE(t, n.base+"/events?last=50", nil)
	require.Equal(t, want, ids(sseJobs(t, events, 50)))

	b.complete(t, 100, 5)
	require.Equal(t, seq(100, 5), sorted(ids(c.collect(5, 10*time.Second))))
	require.Equal(t, seq(100, 5), sorted(ids(sseJobs(t, events, 5))))
	c.quiet(300 * time.Millisecond)
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// bundle is a test's servers plus clients to put jobs and store results.
type bundle struct{ testenv.Clients }

func setup(t *testing.T) bundle { return bundle{testenv.SetupClients(t)} }

// env is the notifier's environment for this bundle plus extra.
func (b bundle) env(port int, extra map[string]string) map[string]string {
	m := map[string]string{
		"BEANSTALK_HOST":         b.Beanstalk.Host,
		"BEANSTALK_PORT":         strconv.Itoa(b.Beanstalk.Port),
		"MONGO_URL":              b.Mongo.URL,
		"MONGO_DB":               b.DB,
		"MONGO_COLLECTION":       "completed",
		"NOTIFIER_LISTEN_HOST":   "127.0.0.1",
		"NOTIFIER_LISTEN_PORT":   strconv.Itoa(port),
		"NOTIFIER_POLL_INTERVAL": "50ms",
		// Tests share a beanstalkd with many tubes: list them all, so a
		// test's own tube is in every stats frame.
		"NOTIFIER_STATS_TUBES": "10000",
		"NOTIFIER_ID":          "test-" + testenv.RandomName(),
		"LOG_FORMAT":           "text",
		"LOG_LEVEL":            "info",
	}
	maps.Copy(m, extra)
	return m
}

// notifier is a notifier running in this process.
type notifier struct {
	base string // http://127.0.0.1:port
	logs *testenv.LogBuffer
	stop func() error
}

func (n *notifier) ws(query string) string {
	return strings.Replace(n.base, "http://", "ws://", 1) + "/ws" + query
}

// start runs the notifier in-process and waits until it is ready.
func start(t *testing.T, b bundle, extra map[string]string) *notifier {
	t.Helper()
	env := b.env(0, extra)
	n := &notifier{logs: &testenv.LogBuffer{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	addr := make(chan net.Addr, 1)
	go func() {
		done <- serve(ctx, func(k string) string { return env[k] }, n.logs, func(a net.Addr) { addr <- a })
	}()
	var once sync.Once
	var runErr error
	n.stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(20 * time.Second):
				runErr = errors.New("run did not return within 20s")
			}
		})
		return runErr
	}
	t.Cleanup(func() {
		require.NoError(t, n.stop())
		if t.Failed() {
			t.Logf("notifier log:\n%s", n.logs.String())
		}
	})
	select {
	case a := <-addr:
		n.base = "http://" + a.String()
	case err := <-done:
		done <- err
		t.Fatalf("notifier stopped: %v\n%s", err, n.logs.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("notifier did not listen within 30s\n%s", n.logs.String())
	}
	require.Eventually(t, func() bool {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("notifier stopped: %v\n%s", err, n.logs.String())
		default:
		}
		resp, err := http.Get(n.base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 20*time.Second, 20*time.Millisecond, "notifier not ready")
	return n
}

// client is a WebSocket client that reads every message into a channel.
type client struct {
	t    testing.TB
	conn *websocket.Conn
	msgs chan job.Event
	done chan struct{}
	err  error // why reading stopped, once done is closed
}

func dial(t testing.TB, url string, header http.Header) *client {
	t.Helper()
	c, err := tryDial(t, url, header)
	require.NoError(t, err)
	return c
}

func tryDial(t testing.TB, url string, header http.Header) (*client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: header})
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("status %d: %w", resp.StatusCode, err)
		}
		return nil, err
	}
	conn.SetReadLimit(1 << 24)
	c := &client{t: t, conn: conn, msgs: make(chan job.Event, 1<<16), done: make(chan struct{})}
	go c.read()
	t.Cleanup(func() { _ = conn.CloseNow() })
	return c, nil
}

func (c *client) read() {
	defer close(c.done)
	for {
		_, b, err := c.conn.Read(context.Background())
		if err != nil {
			c.err = err
			return
		}
		var ev job.Event
		if err := json.Unmarshal(b, &ev); err != nil {
			c.err = fmt.Errorf("decode %s: %w", b, err)
			return
		}
		c.msgs <- ev
	}
}

func (c *client) send(msg string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(c.t, c.conn.Write(ctx, websocket.MessageText, []byte(msg)))
}

// next returns the next message that is not stats.
func (c *client) next(within time.Duration) job.Event {
	c.t.Helper()
	deadline := time.After(within)
	for {
		select {
		case ev := <-c.msgs:
			if ev.Type != job.TypeStats {
				return ev
			}
		case <-deadline:
			c.t.Fatalf("no message within %s", within)
		}
	}
}

// collect gathers completions until it has n or within passes.
func (c *client) collect(n int, within time.Duration) []job.Event {
	c.t.Helper()
	var out []job.Event
	deadline := time.After(within)
	for len(out) < n {
		select {
		case ev := <-c.msgs:
			if ev.Type == job.TypeJob && ev.State == job.StateCompleted {
				out = append(out, ev)
			}
		case <-c.done:
			c.t.Fatalf("connection ended after %d of %d completions: %v", len(out), n, c.err)
		case <-deadline:
			c.t.Fatalf("%d of %d completions within %s", len(out), n, within)
		}
	}
	return out
}

// quiet checks that no job, gap or error message arrives for d.
func (c *client) quiet(d time.Duration) {
	c.t.Helper()
	deadline := time.After(d)
	for {
		select {
		case ev := <-c.msgs:
			if ev.Type != job.TypeStats {
				c.t.Fatalf("unexpected message %+v", ev)
			}
		case <-deadline:
			return
		}
	}
}

// closed waits for the connection to end and returns its close status.
func (c *client) closed(within time.Duration) websocket.StatusCode {
	c.t.Helper()
	for {
		select {
		case <-c.msgs:
		case <-c.done:
			code := websocket.CloseStatus(c.err)
			if code == -1 {
				c.t.Logf("connection ended without a close frame: %v", c.err)
			}
			return code
		case <-time.After(within):
			c.t.Fatalf("connection still open after %s", within)
		}
	}
}

// result is a stored result of job id completed at at.
func result(id uint64, at time.Time) job.Result {
	p := fmt.Sprintf(`{"n":%d}`, id)
	return job.Result{ID: id, Hash: job.Hash(p), Payload: p, Tube: "default", Worker: "test", Attempts: 1,
		StartedAt: at.Add(-time.Millisecond).UTC(), CompletedAt: at.Truncate(time.Millisecond).UTC(), DurationMS: 1}
}

// stamped returns r as the database would have stamped it at at.
func stamped(r job.Result, at time.Time) job.Result {
	r.StoredAt = at.Truncate(time.Millisecond).UTC()
	return r
}

// insert stores r as it is, stored_at included, for results that the
// database stamped at a moment a test chooses (Results.Save stamps with
// the database's clock).
func (b bundle) insert(ctx context.Context, r job.Result) error {
	_, err := b.Store.Collection().InsertOne(ctx, r)
	return err
}

// complete stores results for ids first..first+n-1, as workers would.
func (b bundle) complete(t *testing.T, first uint64, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 8)
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			errs <- b.Store.Save(ctx, result(first+uint64(i), time.Now()))
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

// ids returns the job ids of events.
func ids(evs []job.Event) []uint64 {
	out := make([]uint64, len(evs))
	for i, ev := range evs {
		out[i] = ev.ID
	}
	return out
}

func get(t *testing.T, url string, header http.Header) (*http.Response, string) {
	t.Helper()
	return do(t, http.MethodGet, url, header)
}

// do sends one request and returns the response and its body.
func do(t *testing.T, method, url string, header http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	require.NoError(t, err)
	maps.Copy(req.Header, header)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(b)
}

package hub_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/store"
	"github.com/jobsys/jobs/pkg/testenv"
	"github.com/jobsys/jobs/services/notifier/internal/hub"
)

// server is a hub served over HTTP: /ws and /events.
type server struct {
	hub  *hub.Hub
	base string // http://host:port
}

// serve starts a hub with cfg, and its tracker, on the bundle's servers.
func serve(t *testing.T, b testenv.Clients, cfg hub.Config) *server {
	t.Helper()
	if cfg.Store == nil {
		cfg.Store = b.Store
	}
	cfg.SkipOriginCheck = true
	h := hub.New(cfg)
	track(t, h, b, b.Store, 0)
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", h.ServeWS)
	mux.HandleFunc("/events", h.ServeSSE)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, h.Shutdown(ctx))
		srv.Close()
	})
	return &server{hub: h, base: srv.URL}
}

// dialWS connects to /ws with query.
func (s *server) dialWS(t *testing.T, query string) *wsClient {
	t.Helper()
	return dialWS(t, "ws"+strings.TrimPrefix(s.base, "http")+"/ws"+query)
}

// sse opens /events with query and header and returns its events' data.
func (s *server) sse(t *testing.T, query string, header http.Header) <-chan job.Event {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.base+"/events"+query, nil)
	require.NoError(t, err)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	t.Cleanup(func() { resp.Body.Close() })
	out := make(chan job.Event, 10000)
	go func() {
		defer close(out)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				var ev job.Event
				if json.Unmarshal([]byte(data), &ev) == nil {
					out <- ev
				}
			}
		}
	}()
	return out
}

// refused GETs url and returns the status, the Retry-After header and
// the JSON error body.
func refused(t *testing.T, url string) (int, string, map[string]string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	var body map[string]string
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	return resp.StatusCode, resp.Header.Get("Retry-After"), body
}

// stored inserts results for ids stamped at at, as the store would have
// stamped them, whatever the order of the inserts.
func stored(t *testing.T, b testenv.Clients, at time.Time, ids ...uint64) []job.Result {
	t.Helper()
	var rs []job.Result
	for _, id := range ids {
		p := fmt.Sprintf(`{"n":%d}`, id)
		r := job.Result{ID: id, Hash: job.Hash(p), Payload: p, Tube: b.Tube, Attempts: 1,
			CompletedAt: at.UTC().Truncate(time.Millisecond), StoredAt: at.UTC().Truncate(time.Millisecond)}
		_, err := b.Store.Collection().InsertOne(context.Background(), r)
		require.NoError(t, err)
		rs = append(rs, r)
	}
	return rs
}

// gatedStore holds every replay query until open is closed, and says on
// entered that one is waiting.
type gatedStore struct {
	hub.ReplayStore
	entered chan struct{}
	open    chan struct{}
}

func (g *gatedStore) wait(ctx context.Context) error {
	select {
	case g.entered <- struct{}{}:
	default:
	}
	select {
	case <-g.open:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g *gatedStore) After(ctx context.Context, at time.Time, id uint64, limit int) ([]job.Result, error) {
	if err := g.wait(ctx); err != nil {
		return nil, err
	}
	return g.ReplayStore.After(ctx, at, id, limit)
}

// Replays beyond MaxReplays wait ReplayWait for a place, then get 503
// with Retry-After; clients without a replay are not held back, and a
// place freed serves the next.
func TestReplaysBeyondTheLimitAreRefusedWith503(t *testing.T) {
	t.Parallel()
	b := testenv.SetupClients(t)
	stored(t, b, time.Now(), 1, 2, 3)
	g := &gatedStore{ReplayStore: b.Store, entered: make(chan struct{}, 10), open: make(chan struct{})}
	s := serve(t, b, hub.Config{Store: g, MaxReplays: 2, ReplayWait: 200 * time.Millisecond})

	first, second := s.dialWS(t, "?since=0-0"), s.dialWS(t, "?since=0-0")
	for range 2 {
		select {
		case <-g.entered:
		case <-time.After(5 * time.Second):
			t.Fatal("the replays did not start")
		}
	}
	for _, q := range []string{"/ws?since=0-0", "/ws?last=5", "/events?since=0-0", "/events?last=1"} {
		code, retry, body := refused(t, s.base+q)
		require.Equal(t, http.StatusServiceUnavailable, code, q)
		require.Equal(t, "1", retry, q)
		require.Equal(t, "too many replays", body["error"], q)
	}
	s.dialWS(t, "") // a client without a replay is served at once

	close(g.open)
	for _, c := range []*wsClient{first, second} {
		for _, want := range []uint64{1, 2, 3} {
			require.Equal(t, want, c.next(5*time.Second).ID)
		}
	}
	third := s.dialWS(t, "?since=0-0")
	require.Equal(t, uint64(1), third.next(5*time.Second).ID, "a finished replay frees its place")
}

// A replay that the store fails ends with a gap that says what happened
// and not where the store lives.
func TestAFailedReplayDoesNotNameTheServers(t *testing.T) {
	t.Parallel()
	b := testenv.SetupClients(t)
	own := testenv.StartMongo(t)
	results := store.NewResults(own.Client(), b.DB, "completed")
	s := serve(t, b, hub.Config{Store: results, ReplayTimeout: time.Second})
	own.Stop()

	for _, q := range []string{"?since=0-0", "?last=10"} {
		ev := s.dialWS(t, q).next(10 * time.Second)
		require.Equal(t, job.TypeGap, ev.Type, q)
		require.Contains(t, ev.Error, "replay failed: the results store did not answer", q)
		require.NotContains(t, ev.Error, own.Addr, q)
		require.NotContains(t, ev.Error, "127.0.0.1", q)
	}
}

// Bad replay parameters are refused before the upgrade with 400 and a
// message that names the problem.
func TestBadReplayParametersAre400(t *testing.T) {
	t.Parallel()
	s := serve(t, testenv.SetupClients(t), hub.Config{})
	for _, tc := range []struct{ query, err, detail string }{
		{"?since=yesterday", "bad since cursor", "bad cursor"},
		{"?last=0", "bad last", "from 1 to 500"},
		{"?last=-1", "bad last", "from 1 to 500"},
		{"?last=501", "bad last", "from 1 to 500"},
		{"?last=ten", "bad last", "from 1 to 500"},
		{"?last=1.5", "bad last", "from 1 to 500"},
		{"?since=0-0&last=5", "bad replay request", "not both"},
	} {
		for _, path := range []string{"/ws", "/events"} {
			code, _, body := refused(t, s.base+path+tc.query)
			require.Equal(t, http.StatusBadRequest, code, path+tc.query)
			require.Equal(t, tc.err, body["error"], path+tc.query)
			require.Contains(t, body["detail"], tc.detail, path+tc.query)
		}
	}
}

// An SSE client reconnecting with Last-Event-ID gets a completion stamped
// just before that id that committed after it: the replay rewinds by the
// lookback. What it had already is sent again, and it de-duplicates by
// job id.
func TestLastEventIDRewindsByTheLookback(t *testing.T) {
	t.Parallel()
	b := testenv.SetupClients(t)
	s := serve(t, b, hub.Config{Lookback: 2 * time.Second})
	now := time.Now()
	stored(t, b, now.Add(-10*time.Second), 1) // before the lookback
	seen := stored(t, b, now, 3)[0]
	stored(t, b, now.Add(-500*time.Millisecond), 2) // committed after 3
	events := s.sse(t, "", http.Header{"Last-Event-ID": {string(job.CursorOf(seen))}})
	var got []uint64
	for range 2 {
		select {
		case ev := <-events:
			got = append(got, ev.ID)
		case <-time.After(5 * time.Second):
			t.Fatalf("got %v", got)
		}
	}
	require.Equal(t, []uint64{2, 3}, got, "the late commit, then the repeat; not what is older than the lookback")
}

// A Last-Event-ID nearer the epoch than the lookback (1999-0, 0-0)
// replays from the start: it once made a cursor before 1970 that the
// replay could not read, and the stream closed without a word.
func TestLastEventIDNearTheEpochReplaysFromTheStart(t *testing.T) {
	t.Parallel()
	b := testenv.SetupClients(t)
	s := serve(t, b, hub.Config{Lookback: 2 * time.Second})
	stored(t, b, time.Now().Add(-time.Minute), 1, 2)
	for _, id := range []string{"1999-0", "0-0", "1-5"} {
		events := s.sse(t, "", http.Header{"Last-Event-ID": {id}})
		for _, want := range []uint64{1, 2} {
			select {
			case ev, ok := <-events:
				require.True(t, ok, "Last-Event-ID %s: the stream closed", id)
				require.Equal(t, want, ev.ID, id)
			case <-time.After(5 * time.Second):
				t.Fatalf("Last-Event-ID %s: nothing replayed", id)
			}
		}
	}
}

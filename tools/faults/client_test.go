package faults_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/testenv"
)

var httpClient = &http.Client{Timeout: 10 * time.Second}

// post enqueues body through the manager and returns the job id.
func post(t testing.TB, s *testenv.Stack, query, body string) uint64 {
	t.Helper()
	resp, err := httpClient.Post(s.ManagerURL+"/"+query, "application/json", strings.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	require.Equal(t, http.StatusCreated, resp.StatusCode, "POST %s: %s", query, b)
	var out struct{ ID uint64 }
	require.NoError(t, json.Unmarshal(b, &out))
	require.NotZero(t, out.ID)
	return out.ID
}

// get returns the status and the decoded body of GET /id/.
func get(t testing.TB, s *testenv.Stack, id uint64) (int, map[string]any) {
	t.Helper()
	resp, err := httpClient.Get(fmt.Sprintf("%s/%d/", s.ManagerURL, id))
	require.NoError(t, err)
	defer resp.Body.Close()
	var m map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&m))
	return resp.StatusCode, m
}

func do(t testing.TB, method, u, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, u, bytes.NewBufferString(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// results returns every stored result in the stack's database by id.
func results(t testing.TB, s *testenv.Stack) map[uint64]job.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cur, err := s.Mongo.Client().Database(s.DB).Collection("completed").Find(ctx, bson.D{})
	require.NoError(t, err)
	var rs []job.Result
	require.NoError(t, cur.All(ctx, &rs))
	out := map[uint64]job.Result{}
	for _, r := range rs {
		_, dup := out[r.ID]
		require.False(t, dup, "result %d stored twice", r.ID)
		out[r.ID] = r
	}
	return out
}

func countResults(t testing.TB, s *testenv.Stack) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := s.Mongo.Client().Database(s.DB).Collection("completed").CountDocuments(ctx, bson.D{})
	if err != nil {
		return -1
	}
	return int(n)
}

// subscriber is an `all` subscriber that stays connected: when the
// notifier goes away it reconnects with the greatest cursor it received.
// It counts every completion it receives by id.
type subscriber struct {
	url string
	// rewind, when set, reconnects that much before the greatest cursor,
	// as the board does: a completion that committed late, out of cursor
	// order, just before the disconnect is then not missed, and the
	// repeats it brings are counted as duplicates (PROTOCOL.md).
	rewind time.Duration
	mu     sync.Mutex
	seen   map[uint64]int
	cursor job.Cursor
	gaps   int
	// gapErrs are the gaps' reasons, for the test's log.
	gapErrs []string
	conns   int
	// dupsInConn counts completions a connection delivered twice: the
	// notifier promises none, replay or live.
	dupsInConn int
	// lag is, over the completions stored while a connection was open,
	// the longest from stored_at to receipt: how far the notifier fell
	// behind the store. Completions stored before the connection (the
	// replay's) do not count: their delay is the disconnect's.
	lag      time.Duration
	lagCount int
	// lags is the longest lag of each connection, in order: the first
	// connection's is the notifier's steady state; a later one's
	// includes the replay of what the reconnect missed, which live
	// completions wait behind.
	lags   []time.Duration
	cancel context.CancelFunc
	done   chan struct{}
}

func subscribe(t testing.TB, notifierURL string) *subscriber {
	t.Helper()
	return subscribeRewinding(t, notifierURL, 0)
}

// subscribeRewinding is subscribe with a rewind on reconnects.
func subscribeRewinding(t testing.TB, notifierURL string, rewind time.Duration) *subscriber {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	// Connecting with a cursor from the start, as the board does, makes
	// the first connection replay too: what completes before the
	// subscription takes effect, or before a restart that comes before the
	// first event, is not lost.
	s := &subscriber{url: "ws" + strings.TrimPrefix(notifierURL, "http") + "/ws", rewind: rewind, seen: map[uint64]int{}, cancel: cancel, done: make(chan struct{}),
		cursor: job.NewCursor(time.Now().Add(-time.Second), 0)}
	connected := make(chan struct{})
	go s.loop(ctx, connected)
	select {
	case <-connected:
	case <-time.After(10 * time.Second):
		t.Fatal("subscriber did not connect within 10s")
	}
	t.Cleanup(s.close)
	return s
}

func (s *subscriber) close() {
	s.cancel()
	<-s.done
}

func (s *subscriber) loop(ctx context.Context, connected chan struct{}) {
	defer close(s.done)
	first := true
	for ctx.Err() == nil {
		u := s.url
		s.mu.Lock()
		if since := s.since(); since != "" {
			u += "?since=" + url.QueryEscape(string(since))
		}
		s.mu.Unlock()
		dialAt := time.Now()
		dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		c, _, err := websocket.Dial(dctx, u, nil)
		cancel()
		if err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		c.SetReadLimit(1 << 20)
		if err := wsjson.Write(ctx, c, job.ClientMessage{Type: job.TypeSubscribe, All: true}); err != nil {
			c.CloseNow()
			continue
		}
		s.mu.Lock()
		s.conns++
		s.mu.Unlock()
		if first {
			close(connected)
			first = false
		}
		inConn := map[uint64]bool{}
		s.mu.Lock()
		s.lags = append(s.lags, 0)
		conn := len(s.lags) - 1
		s.mu.Unlock()
		for gap := false; !gap; {
			var e job.Event
			if err := wsjson.Read(ctx, c, &e); err != nil {
				break
			}
			at := time.Now()
			s.mu.Lock()
			switch {
			case e.Type == job.TypeJob && e.State == job.StateCompleted:
				s.seen[e.ID]++
				if inConn[e.ID] {
					s.dupsInConn++
				}
				inConn[e.ID] = true
				if e.Result != nil && e.Result.StoredAt.After(dialAt) {
					s.lag = max(s.lag, at.Sub(e.Result.StoredAt))
					s.lags[conn] = max(s.lags[conn], at.Sub(e.Result.StoredAt))
					s.lagCount++
				}
				if e.Cursor != "" && cursorAfter(e.Cursor, s.cursor) {
					s.cursor = e.Cursor
				}
			case e.Type == job.TypeGap:
				// The replay stopped short: read on from where it
				// stopped, on a new connection (PROTOCOL.md).
				s.gaps++
				s.gapErrs = append(s.gapErrs, e.Error)
				gap = true
			}
			s.mu.Unlock()
		}
		c.CloseNow()
	}
}

// since is the cursor to reconnect with; s.mu is held.
func (s *subscriber) since() job.Cursor {
	if s.rewind == 0 || s.cursor == "" {
		return s.cursor
	}
	at, _, err := s.cursor.Parse()
	if err != nil {
		return s.cursor
	}
	return job.NewCursor(at.Add(-s.rewind), 0)
}

// cursorAfter reports whether cursor a comes after b ("" is before all).
func cursorAfter(a, b job.Cursor) bool {
	if b == "" {
		return true
	}
	at, aid, err1 := a.Parse()
	bt, bid, err2 := b.Parse()
	if err1 != nil || err2 != nil {
		return false
	}
	return at.After(bt) || at.Equal(bt) && aid > bid
}

// counts returns how many distinct completions arrived and the ids that
// arrived more than once.
func (s *subscriber) counts() (distinct int, dups []uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, n := range s.seen {
		if n > 1 {
			dups = append(dups, id)
		}
	}
	return len(s.seen), dups
}

// behind returns the longest lag behind the store, over how many
// completions, and how many a single connection delivered twice.
func (s *subscriber) behind() (lag time.Duration, over, dupsInConn int, byConn []time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lag, s.lagCount, s.dupsInConn, slices.Clone(s.lags)
}

func (s *subscriber) times(id uint64) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen[id]
}

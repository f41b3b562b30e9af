package main

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/queue"
	"github.com/jobsys/jobs/pkg/testenv"
)

// subscribeAll subscribes c to every completion and waits until the
// notifier has handled it: messages are handled in order, so the answer
// to a bad message that follows proves it.
func subscribeAll(c *client) {
	c.t.Helper()
	c.send(`{"type":"subscribe","all":true}`)
	c.send(`{}`)
	ev := c.next(5 * time.Second)
	require.Equal(c.t, job.TypeError, ev.Type, "%+v", ev)
}

func seq(first uint64, n int) []uint64 {
	out := make([]uint64, n)
	for i := range out {
		out[i] = first + uint64(i)
	}
	return out
}

func sorted(s []uint64) []uint64 {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func TestAllSubscriberGetsEveryCompletionOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	n := start(t, b, nil)
	c := dial(t, n.ws(""), nil)
	subscribeAll(c)

	b.complete(t, 1, 500)
	evs := c.collect(500, 60*time.Second)
	require.Equal(t, seq(1, 500), sorted(ids(evs)), "every completion exactly once")
	for _, ev := range evs {
		require.NotNil(t, ev.Result)
		require.Equal(t, ev.ID, ev.Result.ID)
		require.Equal(t, job.Hash(ev.Result.Payload), ev.Result.Hash)
		require.Equal(t, job.CursorOf(*ev.Result), ev.Cursor)
	}
	c.quiet(500 * time.Millisecond)
}

// put adds a job to the bundle's tube.
func (b bundle) put(t *testing.T, payload string) uint64 {
	t.Helper()
	id, err := b.Queue.Put(context.Background(), []byte(payload), queue.PutOptions{Tube: b.Tube, TTR: time.Minute})
	require.NoError(t, err)
	return id
}

// work does what a worker does with the next job of the tube: reserve it,
// then (when finish runs) store its result and delete it.
func (b bundle) work(t *testing.T) (id uint64, finish func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons := queue.NewConsumer(b.Beanstalk.Addr(), []string{b.Tube}, 2*time.Second)
	t.Cleanup(func() { cons.Close() })
	r, err := cons.Reserve(ctx, 5*time.Second)
	require.NoError(t, err)
	return r.ID, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		now := time.Now().UTC()
		res := job.Result{ID: r.ID, Hash: job.Hash(string(r.Body)), Payload: string(r.Body), Tube: b.Tube, Worker: "test",
			Attempts: 1, StartedAt: now.Add(-time.Millisecond), CompletedAt: now, DurationMS: 1}
		require.NoError(t, b.Store.Save(ctx, res))
		require.NoError(t, cons.Delete(ctx, r.ID))
	}
}

func TestJobSubscriberSeesEachStateOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	n := start(t, b, nil)
	id := b.put(t, `{"example":"data"}`)
	c := dial(t, n.ws(""), nil)
	c.send(fmt.Sprintf(`{"type":"subscribe","jobs":[%d]}`, id))
	ev := c.next(5 * time.Second)
	require.Equal(t, job.Event{Type: job.TypeJob, ID: id, State: job.StateReady}, ev)

	got, finish := b.work(t)
	require.Equal(t, id, got)
	ev = c.next(5 * time.Second)
	require.Equal(t, job.Event{Type: job.TypeJob, ID: id, State: job.StateReserved}, ev)

	finish()
	ev = c.next(5 * time.Second)
	require.Equal(t, job.StateCompleted, ev.State)
	require.Equal(t, id, ev.ID)
	require.Equal(t, "09ee943c4fa33cd5a355eb7a4e38f7ef", ev.Result.Hash, "the original README's example hash")
	require.Equal(t, job.CursorOf(*ev.Result), ev.Cursor)
	// Tracker and feed both see the completion; the client gets it once.
	c.quiet(1500 * time.Millisecond)
}

func TestSubscribeAfterCompletionAnswersAtOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	n := start(t, b, nil)
	id := b.put(t, `{"late":true}`)
	_, finish := b.work(t)
	finish()
	// The feed has published the completion, to nobody: the subscribe
	// must be answered from the store.
	require.Eventually(t, func() bool { return metric(t, n.base, "notifier_completions_total") == 1 }, 5*time.Second, 10*time.Millisecond)

	c := dial(t, n.ws(""), nil)
	c.send(fmt.Sprintf(`{"type":"subscribe","jobs":[%d]}`, id))
	ev := c.next(time.Second)
	require.Equal(t, job.StateCompleted, ev.State)
	require.Equal(t, id, ev.ID)
	require.Equal(t, job.Hash(`{"late":true}`), ev.Result.Hash)
	require.NotEmpty(t, ev.Cursor)
	c.quiet(time.Second)
	// One query, about one job.
	require.Equal(t, 1.0, metric(t, n.base, `notifier_store_lookups_total`))
	require.Equal(t, 1.0, metric(t, n.base, `notifier_store_lookup_jobs_total`))
}

func TestSubscribeToAJobNotYetPut(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// A beanstalkd of its own, so the next job id is known: 1.
	b.Beanstalk = testenv.StartBeanstalkd(t, testenv.BeanstalkdOptions{})
	b.Queue = b.Pool(t)
	n := start(t, b, nil)

	c := dial(t, n.ws(""), nil)
	c.send(`{"type":"subscribe","jobs":[1]}`)
	require.Equal(t, job.Event{Type: job.TypeError, Error: "job 1 not found"}, c.next(5*time.Second))
	require.EqualValues(t, 1, b.put(t, `{"soon":1}`))
	require.Equal(t, job.Event{Type: job.TypeJob, ID: 1, State: job.StateReady}, c.next(5*time.Second))
}

func TestReconnectWithSinceGetsExactlyWhatWasMissed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	n := start(t, b, nil)
	c := dial(t, n.ws(""), nil)
	subscribeAll(c)
	b.complete(t, 1, 10)
	evs := c.collect(10, 20*time.Second)
	last := maxCursor(evs)
	require.NoError(t, c.conn.Close(websocket.StatusNormalClosure, "bye"))

	b.complete(t, 11, 50)
	c2 := dial(t, n.ws("?since="+string(last)), nil)
	missed := c2.collect(50, 20*time.Second)
	require.Equal(t, seq(11, 50), sorted(ids(missed)))
	// Replays come in cursor order.
	require.True(t, slices.IsSortedFunc(missed, func(a, b job.Event) int { return compareCursor(a.Cursor, b.Cursor) }))

	// Then live, with no duplicate.
	b.complete(t, 61, 3)
	require.Equal(t, seq(61, 3), sorted(ids(c2.collect(3, 10*time.Second))))
	c2.quiet(500 * time.Millisecond)
}

// maxCursor is the greatest cursor of evs: where a client resumes from
// (with polling, a late commit can arrive after a greater cursor).
func maxCursor(evs []job.Event) job.Cursor {
	var last job.Cursor
	for _, ev := range evs {
		if last == "" || compareCursor(ev.Cursor, last) > 0 {
			last = ev.Cursor
		}
	}
	return last
}

func compareCursor(a, b job.Cursor) int {
	at, aid, _ := a.Parse()
	bt, bid, _ := b.Parse()
	if c := at.Compare(bt); c != 0 {
		return c
	}
	switch {
	case aid < bid:
		return -1
	case aid > bid:
		return 1
	}
	return 0
}

func TestLateCommitInsideTheLookbackIsDeliveredOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	n := start(t, b, nil)
	c := dial(t, n.ws(""), nil)
	subscribeAll(c)
	ctx := context.Background()
	now := time.Now()
	require.NoError(t, b.insert(ctx, stamped(result(100, now), now)))
	require.Equal(t, []uint64{100}, ids(c.collect(1, 5*time.Second)))
	// Stamped by the database before the one already pushed, visible
	// only after it (a write that took a second to commit).
	require.NoError(t, b.insert(ctx, stamped(result(99, now), now.Add(-time.Second))))
	require.Equal(t, []uint64{99}, ids(c.collect(1, 5*time.Second)))
	c.quiet(time.Second) // twenty polls over the same window
}

func TestReplayBeyondTheLimitEndsWithAGap(t *testing.T) {
	t.Parallel()
	b := setup(t)
	n := start(t, b, map[string]string{"NOTIFIER_REPLAY_LIMIT": "5"})
	since := job.NewCursor(time.Now().Add(-time.Minute), 0)
	// Once the feed has published them all, they are history: replays
	// only, no live events.
	watcher := dial(t, n.ws(""), nil)
	subscribeAll(watcher)
	b.complete(t, 1, 8)
	watcher.collect(8, 10*time.Second)
	c := dial(t, n.ws("?since="+string(since)), nil)
	replayed := c.collect(5, 5*time.Second)
	gap := c.next(5 * time.Second)
	require.Equal(t, job.TypeGap, gap.Type)
	require.Equal(t, replayed[4].Cursor, gap.Cursor, "the gap says where to go on from")

	c2 := dial(t, n.ws("?since="+string(gap.Cursor)), nil)
	rest := c2.collect(3, 5*time.Second)
	require.Equal(t, seq(1, 8), sorted(append(ids(replayed), ids(rest)...)))
	c2.quiet(300 * time.Millisecond)
}

func TestBadClientMessagesAreAnsweredAndTheConnectionStays(t *testing.T) {
	t.Parallel()
	b := setup(t)
	n := start(t, b, nil)
	c := dial(t, n.ws(""), nil)
	for msg, want := range map[string]string{
		`hello`:                             "not valid JSON",
		`{"type":"subscribe"}`:              `give "all": true or a list of job ids`,
		`{"type":"subscribe","jobs":[0]}`:   "job ids start at 1",
		`{"type":"subscribe","jobs":["x"]}`: `"jobs" must be a list of job ids`,
		`{"type":"publish","all":true}`:     `type "publish"`,
		`{"type":"subscribe","al":true}`:    `unknown field "al"`,
	} {
		c.send(msg)
		ev := c.next(5 * time.Second)
		require.Equal(t, job.TypeError, ev.Type, msg)
		require.Contains(t, ev.Error, want, msg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, c.conn.Write(ctx, websocket.MessageBinary, []byte(`{"type":"subscribe","all":true}`)))
	require.Contains(t, c.next(5*time.Second).Error, "binary frames")

	// Still open and working.
	subscribeAll(c)
	b.complete(t, 7, 1)
	require.Equal(t, []uint64{7}, ids(c.collect(1, 5*time.Second)))
}

func TestA64KiBFrameClosesWith1009(t *testing.T) {
	t.Parallel()
	b := setup(t)
	n := start(t, b, nil)
	c := dial(t, n.ws(""), nil)
	msg := `{"type":"subscribe","jobs":[1` + strings.Repeat(",1", 32<<10) + `]}`
	msg = msg[:64<<10]
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = c.conn.Write(ctx, websocket.MessageText, []byte(msg))
	require.Equal(t, websocket.StatusMessageTooBig, c.closed(5*time.Second))

	// Just under the limit is read (and refused as a message, politely).
	c2 := dial(t, n.ws(""), nil)
	c2.send(msg[:64<<10-1])
	require.Equal(t, job.TypeError, c2.next(5*time.Second).Type)
}

func TestOrigins(t *testing.T) {
	t.Parallel()
	b := setup(t)
	n := start(t, b, map[string]string{"NOTIFIER_ALLOWED_ORIGINS": "https://board.example.com,*.trusted.example"})
	for origin, ok := range map[string]bool{
		"":                                 true, // not a browser
		n.base:                             true, // same host
		"https://board.example.com":        true,
		"http://board.example.com":         false, // the pattern names the scheme
		"https://app.trusted.example":      true,
		"https://evil.example":             false,
		"https://board.example.com.evil.x": false,
		"null":                             false,
	} {
		h := http.Header{}
		if origin != "" {
			h.Set("Origin", origin)
		}
		c, err := tryDial(t, n.ws(""), h)
		if ok {
			require.NoError(t, err, origin)
			_ = c.conn.CloseNow()
			continue
		}
		require.ErrorContains(t, err, "status 403", origin)
		resp, _ := get(t, n.base+"/events", h)
		require.Equal(t, http.StatusForbidden, resp.StatusCode, origin)
	}
}

func TestDefaultOriginIsTheSameHostOnly(t *testing.T) {
	t.Parallel()
	b := setup(t)
	n := start(t, b, nil)
	_, err := tryDial(t, n.ws(""), http.Header{"Origin": {"http://localhost:1"}})
	require.ErrorContains(t, err, "status 403")
	c := dial(t, n.ws(""), http.Header{"Origin": {n.base}})
	_ = c.conn.CloseNow()
}

func TestMaxClients(t *testing.T) {
	t.Parallel()
	b := setup(t)
	n := start(t, b, map[string]string{"NOTIFIER_MAX_CLIENTS": "2"})
	c1 := dial(t, n.ws(""), nil)
	dial(t, n.ws(""), nil)
	_, err := tryDial(t, n.ws(""), nil)
	require.ErrorContains(t, err, "status 503")
	resp, body := get(t, n.base+"/events", nil)
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	require.JSONEq(t, `{"error":"too many clients"}`, body)

	require.NoError(t, c1.conn.Close(websocket.StatusNormalClosure, ""))
	require.Eventually(t, func() bool {
		c, err := tryDial(t, n.ws(""), nil)
		if err == nil {
			_ = c.conn.CloseNow()
		}
		return err == nil
	}, 5*time.Second, 20*time.Millisecond)
}

func TestToken(t *testing.T) {
	t.Parallel()
	b := setup(t)
	n := start(t, b, map[string]string{"API_TOKEN": "s3cret"})
	for _, path := range []string{"/ws", "/events"} {
		resp, body := get(t, n.base+path, nil)
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode, path)
		require.Contains(t, body, "token required")
		resp, _ = get(t, n.base+path, http.Header{"Authorization": {"Bearer wrong"}})
		require.Equal(t, http.StatusForbidden, resp.StatusCode, path)
		resp, _ = get(t, n.base+path+"?token=wrong", nil)
		require.Equal(t, http.StatusForbidden, resp.StatusCode, path)
	}
	_, err := tryDial(t, n.ws(""), nil)
	require.ErrorContains(t, err, "status 401")
	_, err = tryDial(t, n.ws("?token=nope"), nil)
	require.ErrorContains(t, err, "status 403")
	c := dial(t, n.ws("?token=s3cret"), nil)
	_ = c.conn.CloseNow()
	c = dial(t, n.ws(""), http.Header{"Authorization": {"Bearer s3cret"}})
	_ = c.conn.CloseNow()

	resp, _ := get(t, n.base+"/healthz", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, "health needs no token")
}

func TestShutdownClosesClientsWithGoingAway(t *testing.T) {
	t.Parallel()
	b := setup(t)
	n := start(t, b, nil)
	c := dial(t, n.ws(""), nil)
	subscribeAll(c)
	require.NoError(t, n.stop())
	require.Equal(t, websocket.StatusGoingAway, c.closed(5*time.Second))
	require.Contains(t, n.logs.String(), "stopped")
}

func TestStatsEverySecond(t *testing.T) {
	t.Parallel()
	b := setup(t)
	n := start(t, b, nil)
	b.put(t, `{"waiting":1}`)
	b.complete(t, 1, 3)
	c := dial(t, n.ws(""), nil)
	deadline := time.After(5 * time.Second)
	var stats []job.Event
	for len(stats) < 2 {
		select {
		case ev := <-c.msgs:
			if ev.Type == job.TypeStats {
				stats = append(stats, ev)
			}
		case <-deadline:
			t.Fatalf("%d stats messages in 5s", len(stats))
		}
	}
	require.Equal(t, uint64(1), stats[1].Tubes[b.Tube].Ready)
	require.NotNil(t, stats[1].CompletedLastSecond)
}

// A replay longer than one page (1,000 results) pages by the stored order,
// whatever the completion times say.
func TestReplayPagesInStoredOrder(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const total = 2500
	base := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	docs := make([]any, total)
	for i := range total {
		// completed_at runs backwards: paging by it would repeat and skip.
		r := result(uint64(i+1), base.Add(time.Duration(total-i)*time.Millisecond))
		docs[i] = stamped(r, base.Add(time.Duration(i)*time.Millisecond))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := b.Store.Collection().InsertMany(ctx, docs)
	require.NoError(t, err)

	n := start(t, b, nil)
	c := dial(t, n.ws("?since="+string(job.NewCursor(base.Add(-time.Second), 0))), nil)
	got := ids(c.collect(total, 30*time.Second))
	require.Equal(t, seq(1, total), got, "every result once, in stored order")
	c.quiet(300 * time.Millisecond)
}

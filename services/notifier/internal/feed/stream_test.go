package feed_test

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/services/notifier/internal/feed"
)

// Failures a server cannot be made to produce on demand here (a network
// error at a chosen moment, an answer of a server without change
// streams in a given order) are tested against fakes that answer as the
// driver's ChangeStream does: TryNext false with Err set after a failed
// getMore, ResumeToken the last batch's postBatchResumeToken
// (mongo/change_stream.go). Everything a real server can show runs
// against devmongo in changestream_test.go.

func token(s string) bson.Raw {
	b, err := bson.Marshal(bson.D{{Key: "_data", Value: s}})
	if err != nil {
		panic(err)
	}
	return b
}

// change is one event a fake stream yields: the stored document and the
// resume token after it.
type change struct {
	op    string
	doc   *job.Result
	token bson.Raw
}

// fakeStream yields its changes as one server batch, then fails with err,
// or, when err is nil, stays idle until its context ends.
type fakeStream struct {
	mu      sync.Mutex
	changes []change
	err     error
	cur     change
	tok     bson.Raw
	failed  error
}

func (s *fakeStream) TryNext(ctx context.Context) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.changes) > 0 {
		s.cur, s.changes = s.changes[0], s.changes[1:]
		s.tok = s.cur.token
		return true
	}
	if s.err != nil {
		s.failed = s.err
		return false
	}
	s.mu.Unlock()
	select { // a getMore that waits for maxAwaitTime
	case <-ctx.Done():
	case <-time.After(5 * time.Millisecond):
	}
	s.mu.Lock()
	s.failed = ctx.Err()
	return false
}

func (s *fakeStream) RemainingBatchLength() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.changes)
}

func (s *fakeStream) Decode(v any) error {
	s.mu.Lock()
	ev := bson.D{{Key: "operationType", Value: s.cur.op}}
	if s.cur.doc != nil {
		ev = append(ev, bson.E{Key: "fullDocument", Value: *s.cur.doc})
	}
	s.mu.Unlock()
	b, err := bson.Marshal(ev)
	if err != nil {
		return err
	}
	return bson.Unmarshal(b, v)
}

func (s *fakeStream) ResumeToken() bson.Raw {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tok
}

func (s *fakeStream) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed
}

func (s *fakeStream) Close(context.Context) error { return nil }

// ID is a live cursor's: these fakes model failures, not closed cursors
// (devmongo closes real ones in changestream_test.go).
func (s *fakeStream) ID() int64 { return 1 }

// answer is what the fake server does for one open: fail with err or
// hand out stream.
type answer struct {
	err    error
	stream *fakeStream
}

// fakeOpener plays its answers in order, then opens idle streams, and
// records the token each open resumed after.
type fakeOpener struct {
	mu      sync.Mutex
	answers []answer
	tokens  []bson.Raw
}

func (o *fakeOpener) Open(_ context.Context, resumeAfter bson.Raw) (feed.Stream, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.tokens = append(o.tokens, resumeAfter)
	if len(o.answers) == 0 {
		return &fakeStream{}, nil
	}
	a := o.answers[0]
	o.answers = o.answers[1:]
	if a.err != nil {
		return nil, a.err
	}
	return a.stream, nil
}

func (o *fakeOpener) opened() []bson.Raw {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]bson.Raw(nil), o.tokens...)
}

func serverError(code int32, name string) error {
	return mongo.CommandError{Code: code, Name: name, Message: "fake server answer " + name}
}

func inserted(r job.Result, tok string) change {
	return change{op: "insert", doc: &r, token: token(tok)}
}

func TestServersWithoutChangeStreamsArePolled(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"standalone mongod", serverError(40573, "Location40573")},
		{"FerretDB NotImplemented", serverError(238, "NotImplemented")},
		{"CommandNotFound", serverError(59, "CommandNotFound")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			o := &fakeOpener{answers: []answer{{err: tc.err}}}
			c := newCollector()
			f := feed.New(feed.Config{Mode: feed.ModeAuto, PollInterval: 20 * time.Millisecond, PollLookback: time.Second,
				ID: "n1", Store: b.results, Opener: o, State: b.state, Logger: logger(t)})
			start(t, f, c.sink)
			waitMode(t, f, feed.ModePoll)
			require.NoError(t, insert(context.Background(), b.results, result(5, time.Now())))
			require.Eventually(t, func() bool { return c.times(5) == 1 }, 5*time.Second, 10*time.Millisecond)
			require.Len(t, o.opened(), 1, "one try, then polling")
		})
	}
}

func TestHistoryLostStartsANewStreamAndCatchesUp(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	now := time.Now()
	r1 := result(1, now)
	require.NoError(t, insert(ctx, b.results, r1))
	// Stored while the stream was failing: only the catch-up query can find it.
	r2 := result(2, now.Add(time.Millisecond))
	require.NoError(t, insert(ctx, b.results, r2))
	r3 := result(3, now.Add(2*time.Millisecond))

	o := &fakeOpener{answers: []answer{
		{stream: &fakeStream{changes: []change{inserted(r1, "t1")}, err: serverError(286, "ChangeStreamHistoryLost")}},
		{stream: &fakeStream{changes: []change{inserted(r3, "t3"), inserted(r2, "t2")}}},
	}}
	c := newCollector()
	f := feed.New(feed.Config{Mode: feed.ModeAuto, ID: "n1", Store: b.results, Opener: o, State: b.state, Logger: logger(t)})
	start(t, f, c.sink)
	waitMode(t, f, feed.ModeChangeStream)
	require.Eventually(t, func() bool { return c.times(1) == 1 && c.times(2) == 1 && c.times(3) == 1 }, 5*time.Second, 10*time.Millisecond)
	require.Empty(t, c.dups(), "r2 came from both the catch-up and the new stream, and is delivered once")

	tokens := o.opened()
	require.GreaterOrEqual(t, len(tokens), 2)
	require.Nil(t, tokens[0], "nothing saved yet: a stream from now")
	require.Nil(t, tokens[1], "the lost token is not used again")
	require.Eventually(t, func() bool {
		st, err := b.state.Load(ctx, "n1")
		return err == nil && string(st.Token) == string(token("t2"))
	}, 5*time.Second, 10*time.Millisecond, "the new stream's token is saved")
}

func TestLostTokenAtStartCatchesUpFromTheSavedCursor(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	now := time.Now()
	r1, r2 := result(1, now), result(2, now.Add(time.Millisecond))
	require.NoError(t, insert(ctx, b.results, r1))
	require.NoError(t, insert(ctx, b.results, r2))
	require.NoError(t, b.state.Save(ctx, "n1", feed.State{Token: token("old"), Cursor: job.CursorOf(r1)}))

	o := &fakeOpener{answers: []answer{{err: serverError(286, "ChangeStreamHistoryLost")}}}
	c := newCollector()
	f := feed.New(feed.Config{Mode: feed.ModeAuto, ID: "n1", Store: b.results, Opener: o, State: b.state, Logger: logger(t)})
	start(t, f, c.sink)
	require.Eventually(t, func() bool { return c.times(2) == 1 }, 5*time.Second, 10*time.Millisecond)
	require.Zero(t, c.times(1), "r1 was delivered before the restart")
	tokens := o.opened()
	require.Equal(t, token("old"), tokens[0])
	require.Nil(t, tokens[1])
	require.Equal(t, feed.ModeChangeStream, f.Mode())
}

func TestNetworkErrorResumesAfterTheToken(t *testing.T) {
	t.Parallel()
	b := setup(t)
	now := time.Now()
	r1, r2 := result(1, now), result(2, now.Add(time.Millisecond))
	netErr := &net.OpError{Op: "read", Net: "tcp", Err: &net.DNSError{Err: "connection reset", IsTemporary: true}}
	o := &fakeOpener{answers: []answer{
		{err: netErr}, // the server is not up yet
		{stream: &fakeStream{changes: []change{inserted(r1, "t1")}, err: netErr}},
		{stream: &fakeStream{changes: []change{inserted(r2, "t2")}, err: serverError(91, "ShutdownInProgress")}},
	}}
	c := newCollector()
	f := feed.New(feed.Config{Mode: feed.ModeAuto, ID: "n1", Store: b.results, Opener: o, State: b.state, Logger: logger(t)})
	start(t, f, c.sink)
	require.Eventually(t, func() bool { return c.times(1) == 1 && c.times(2) == 1 && len(o.opened()) >= 4 }, 10*time.Second, 10*time.Millisecond)
	tokens := o.opened()
	require.Nil(t, tokens[0])
	require.Nil(t, tokens[1])
	require.Equal(t, token("t1"), tokens[2])
	require.Equal(t, token("t2"), tokens[3])
	require.Equal(t, feed.ModeChangeStream, f.Mode())
}

func TestSavedTokenIsResumedAfterARestart(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r1 := result(1, time.Now())
	o := &fakeOpener{answers: []answer{{stream: &fakeStream{changes: []change{inserted(r1, "t1")}}}}}
	c := newCollector()
	f := feed.New(feed.Config{Mode: feed.ModeChangeStream, ID: "n1", Store: b.results, Opener: o, State: b.state, Logger: logger(t)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx, c.sink) }()
	require.Eventually(t, func() bool { return c.times(1) == 1 }, 5*time.Second, 10*time.Millisecond)
	cancel()
	require.NoError(t, <-done)

	st, err := b.state.Load(context.Background(), "n1")
	require.NoError(t, err)
	require.Equal(t, token("t1"), st.Token)
	require.Equal(t, job.CursorOf(r1), st.Cursor)

	o2 := &fakeOpener{}
	f2 := feed.New(feed.Config{Mode: feed.ModeChangeStream, ID: "n1", Store: b.results, Opener: o2, State: b.state, Logger: logger(t)})
	start(t, f2, newCollector().sink)
	waitMode(t, f2, feed.ModeChangeStream)
	require.Equal(t, token("t1"), o2.opened()[0])

	// Another instance has its own record.
	o3 := &fakeOpener{}
	f3 := feed.New(feed.Config{Mode: feed.ModeChangeStream, ID: "n2", Store: b.results, Opener: o3, State: b.state, Logger: logger(t)})
	start(t, f3, newCollector().sink)
	waitMode(t, f3, feed.ModeChangeStream)
	require.Nil(t, o3.opened()[0])
}

func TestIdleStreamSavesItsAdvancingToken(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// No document, only a token that moves on (postBatchResumeToken).
	s := &fakeStream{changes: []change{{op: "noop-for-test", token: token("pbrt")}}}
	o := &fakeOpener{answers: []answer{{stream: s}}}
	f := feed.New(feed.Config{Mode: feed.ModeChangeStream, ID: "n1", Store: b.results, Opener: o, State: b.state,
		Logger: logger(t), SaveEvery: 50 * time.Millisecond})
	start(t, f, newCollector().sink)
	require.Eventually(t, func() bool {
		st, err := b.state.Load(context.Background(), "n1")
		return err == nil && string(st.Token) == string(token("pbrt"))
	}, 5*time.Second, 10*time.Millisecond)
}

// The opening aggregate's postBatchResumeToken (the driver's ResumeToken
// right after Watch) is kept: when the first getMore fails, the stream
// reopens after it rather than from a later "now" that would lose what
// was committed in between.
func TestTokenOfTheOpeningAggregateIsKept(t *testing.T) {
	t.Parallel()
	b := setup(t)
	netErr := &net.OpError{Op: "read", Net: "tcp", Err: &net.DNSError{Err: "connection reset", IsTemporary: true}}
	o := &fakeOpener{answers: []answer{
		{stream: &fakeStream{tok: token("opened"), err: netErr}},
	}}
	f := feed.New(feed.Config{Mode: feed.ModeAuto, ID: "n1", Store: b.results, Opener: o, State: b.state, Logger: logger(t)})
	start(t, f, newCollector().sink)
	require.Eventually(t, func() bool { return len(o.opened()) >= 2 }, 10*time.Second, 10*time.Millisecond)
	tokens := o.opened()
	require.Nil(t, tokens[0])
	require.Equal(t, token("opened"), tokens[1])
}

// failingOpener opens streams that fail at their first read, as a
// server in an election does, and counts the opens.
type failingOpener struct{ n atomic.Int64 }

func (o *failingOpener) Open(context.Context, bson.Raw) (feed.Stream, error) {
	o.n.Add(1)
	return &fakeStream{err: serverError(91, "ShutdownInProgress")}, nil
}

// Failures after a successful open back off as failures of the open do:
// the back-off counts failures in a row across both.
func TestBackoffCountsFailuresAcrossOpenAndRead(t *testing.T) {
	t.Parallel()
	b := setup(t)
	o := &failingOpener{}
	f := feed.New(feed.Config{Mode: feed.ModeAuto, ID: "n1", Store: b.results, Opener: o, State: b.state, Logger: logger(t)})
	start(t, f, newCollector().sink)
	time.Sleep(2 * time.Second)
	// Backing off from 100ms and doubling (with jitter), two seconds hold
	// at most 6 opens; a fixed pause of ~75ms would make about 25.
	require.LessOrEqual(t, o.n.Load(), int64(7))
	require.GreaterOrEqual(t, o.n.Load(), int64(2), "it does retry")
}

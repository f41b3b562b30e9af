package feed_test

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/services/notifier/internal/feed"
)

// The errors a MongoDB replica set answers to opening or reading a change
// stream, and what the feed does about each. The reference is the
// change-streams spec (mongodb/specifications,
// source/change-streams/change-streams.md, "Resumable Error") and the
// server's error codes (src/mongo/base/error_codes.yml).

// Any error that is neither transient nor permanent, answered to an open
// that carried a saved token, means that token is no good: MongoDB
// answers 9 FailedToParse for {_data: "not a token"}, 40647 for a
// non-string _data and a KeyString error (5xxxx) for hex that is not a
// token, where devmongo used to answer 260 for all. Retrying it stalls
// the feed forever; it must start a fresh stream and catch up from the
// store, missing nothing.
func TestNonTransientErrorOnASavedTokenStartsOverAndCatchesUp(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		code int32
	}{
		{"FailedToParse", 9},
		{"Location40647", 40647},
		{"KeyString", 50811},
		{"InvalidResumeToken", 260},
		{"ChangeStreamFatalError", 280},
		{"ChangeStreamHistoryLost", 286},
		{"BadValue", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			ctx := context.Background()
			now := time.Now()
			r1, r2 := result(1, now), result(2, now.Add(time.Millisecond))
			require.NoError(t, insert(ctx, b.results, r1))
			require.NoError(t, insert(ctx, b.results, r2))
			require.NoError(t, b.state.Save(ctx, "n1", feed.State{Token: token("not a token"), Cursor: job.CursorOf(r1)}))

			o := &fakeOpener{answers: []answer{{err: serverError(tc.code, tc.name)}}}
			c := newCollector()
			f := feed.New(feed.Config{Mode: feed.ModeAuto, ID: "n1", Store: b.results, Opener: o, State: b.state, Logger: logger(t)})
			start(t, f, c.sink)
			require.Eventually(t, func() bool { return c.times(2) == 1 }, 5*time.Second, 10*time.Millisecond, "caught up from the saved cursor")
			require.Zero(t, c.times(1), "r1 was delivered before the restart")
			tokens := o.opened()
			require.Equal(t, token("not a token"), tokens[0])
			require.Nil(t, tokens[1], "the bad token is dropped at once")
			require.Equal(t, feed.ModeChangeStream, f.Mode())
			require.True(t, f.Healthy())
		})
	}
}

// Transient errors (the spec's resumable ones, network errors) keep the
// token: the next open resumes after it.
func TestTransientErrorsKeepTheToken(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"network", &net.OpError{Op: "read", Net: "tcp", Err: &net.DNSError{Err: "connection reset", IsTemporary: true}}},
		{"ShutdownInProgress", serverError(91, "ShutdownInProgress")},
		{"PrimarySteppedDown", serverError(189, "PrimarySteppedDown")},
		{"NotWritablePrimary", serverError(10107, "NotWritablePrimary")},
		{"InterruptedDueToReplStateChange", serverError(11602, "InterruptedDueToReplStateChange")},
		{"ElectionInProgress", serverError(216, "ElectionInProgress")},
		{"CursorNotFound", serverError(43, "CursorNotFound")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			ctx := context.Background()
			require.NoError(t, b.state.Save(ctx, "n1", feed.State{Token: token("good"), Cursor: job.CursorOf(result(1, time.Now()))}))
			o := &fakeOpener{answers: []answer{{err: tc.err}}}
			f := feed.New(feed.Config{Mode: feed.ModeAuto, ID: "n1", Store: b.results, Opener: o, State: b.state, Logger: logger(t)})
			start(t, f, newCollector().sink)
			waitMode(t, f, feed.ModeChangeStream)
			tokens := o.opened()
			require.Equal(t, token("good"), tokens[0])
			require.Equal(t, token("good"), tokens[1], "resumed after the same token")
		})
	}
}

// logRecorder keeps the messages and attributes logged, for tests that
// check what an operator is told.
type logRecorder struct {
	mu    sync.Mutex
	lines []string
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	var sb strings.Builder
	sb.WriteString(r.Level.String() + " " + r.Message)
	r.Attrs(func(a slog.Attr) bool { sb.WriteString(" " + a.String()); return true })
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, sb.String())
	return nil
}

func (l *logRecorder) find(sub string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.lines {
		if strings.Contains(s, sub) {
			return s
		}
	}
	return ""
}

// Errors that no retry cures (13 Unauthorized: the user lacks the
// changeStream privilege; 166 CommandNotSupportedOnView: the results are
// a view; 73 InvalidNamespace) are said plainly, make the feed unhealthy
// (readyz) and are retried slowly, not every few hundred milliseconds.
func TestPermanentErrorsAreReportedAndRetriedSlowly(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		code int32
		name string
		says string
	}{
		{13, "Unauthorized", "changeStream privilege"},
		{166, "CommandNotSupportedOnView", "view"},
		{73, "InvalidNamespace", "namespace"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			rec := &logRecorder{}
			o := &fakeOpener{answers: []answer{{err: serverError(tc.code, tc.name)}, {err: serverError(tc.code, tc.name)}, {err: serverError(tc.code, tc.name)}}}
			f := feed.New(feed.Config{Mode: feed.ModeAuto, ID: "n1", Store: b.results, Opener: o, State: b.state, Logger: slog.New(rec)})
			start(t, f, newCollector().sink)
			require.Eventually(t, func() bool { return rec.find(tc.says) != "" }, 5*time.Second, 10*time.Millisecond, "a log line says what is wrong")
			require.Contains(t, rec.find(tc.says), "ERROR")
			require.False(t, f.Healthy(), "readyz reports it")
			time.Sleep(1500 * time.Millisecond)
			require.Len(t, o.opened(), 1, "retried slowly: not again within 1.5s")
		})
	}
}

// 136 CappedPositionLost on a getMore is a real server's answer when the
// stream fell off the oplog: the token is useless, and the feed starts
// over at once instead of resuming after it and getting 286 next round.
func TestCappedPositionLostStartsOverAtOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	now := time.Now()
	r1, r2 := result(1, now), result(2, now.Add(time.Millisecond))
	require.NoError(t, insert(ctx, b.results, r1))
	require.NoError(t, insert(ctx, b.results, r2)) // stored while the stream fell behind
	o := &fakeOpener{answers: []answer{
		{stream: &fakeStream{changes: []change{inserted(r1, "t1")}, err: serverError(136, "CappedPositionLost")}},
	}}
	c := newCollector()
	f := feed.New(feed.Config{Mode: feed.ModeAuto, ID: "n1", Store: b.results, Opener: o, State: b.state, Logger: logger(t)})
	start(t, f, c.sink)
	require.Eventually(t, func() bool { return c.times(1) == 1 && c.times(2) == 1 }, 5*time.Second, 10*time.Millisecond)
	tokens := o.opened()
	require.Len(t, tokens, 2)
	require.Nil(t, tokens[1], "a new stream, not a resume after t1")
	require.Empty(t, c.dups())
}

// A token saved by an idle stream, before any completion was delivered,
// has no cursor beside it: when it must be dropped, the catch-up starts
// from when it was saved, so what was stored since is not lost.
func TestDroppedTokenWithoutCursorCatchesUpFromWhenItWasSaved(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	require.NoError(t, b.state.Save(ctx, "n1", feed.State{Token: token("not a token")}))
	r1 := result(1, time.Now().Add(10*time.Millisecond))
	require.NoError(t, insert(ctx, b.results, r1))
	o := &fakeOpener{answers: []answer{{err: serverError(9, "FailedToParse")}}}
	c := newCollector()
	f := feed.New(feed.Config{Mode: feed.ModeAuto, ID: "n1", Store: b.results, Opener: o, State: b.state, Logger: logger(t)})
	start(t, f, c.sink)
	require.Eventually(t, func() bool { return c.times(1) == 1 }, 5*time.Second, 10*time.Millisecond, "stored after the token was saved")
}

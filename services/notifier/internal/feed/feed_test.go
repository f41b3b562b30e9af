package feed_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/store"
	"github.com/jobsys/jobs/pkg/testenv"
	"github.com/jobsys/jobs/services/notifier/internal/feed"
)

func TestMain(m *testing.M) { testenv.Main(m) }

type bundle struct {
	results *store.Results
	state   feed.MongoState
	client  *mongo.Client
}

func setup(t *testing.T) bundle {
	t.Helper()
	b := testenv.Setup(t)
	client, err := store.Connect(b.Mongo.URL, "feed-test", 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { _ = client.Disconnect(context.Background()) })
	rs := store.NewResults(client, b.DB, "completed")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, rs.EnsureIndexes(ctx))
	return bundle{results: rs, state: feed.MongoState{Coll: client.Database(b.DB).Collection(feed.StateCollection)}, client: client}
}

// setupOwn is setup on a devmongo of the test's own, started with flags,
// for tests that stop or restart the server.
func setupOwn(t *testing.T, flags ...string) (bundle, *testenv.Mongo) {
	t.Helper()
	m := testenv.StartMongo(t, flags...)
	client, err := store.Connect(m.URL, "feed-test", 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { _ = client.Disconnect(context.Background()) })
	db := "db_" + testenv.RandomName()
	rs := store.NewResults(client, db, "completed")
	return bundle{results: rs, state: feed.MongoState{Coll: client.Database(db).Collection(feed.StateCollection)}, client: client}, m
}

func logger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, nil)).With("test", t.Name())
	}
	return slog.New(slog.DiscardHandler)
}

// collector is a sink that remembers every delivery.
type collector struct {
	mu    sync.Mutex
	got   []job.Result
	count map[uint64]int
}

func newCollector() *collector { return &collector{count: map[uint64]int{}} }

func (c *collector) sink(_ context.Context, rs []job.Result) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range rs {
		c.got = append(c.got, r)
		c.count[r.ID]++
	}
}

func (c *collector) times(id uint64) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.count[id]
}

func (c *collector) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.got)
}

func (c *collector) dups() []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []uint64
	for id, n := range c.count {
		if n > 1 {
			out = append(out, id)
		}
	}
	return out
}

func result(id uint64, at time.Time) job.Result {
	p := fmt.Sprintf(`{"n":%d}`, id)
	at = at.Truncate(time.Millisecond).UTC()
	return job.Result{ID: id, Hash: job.Hash(p), Payload: p, Tube: "default", Worker: "test", Attempts: 1,
		StartedAt: at.Add(-time.Millisecond), CompletedAt: at, DurationMS: 1, StoredAt: at}
}

// insert stores r as it is, stored_at included: a result that the database
// stamped at r.StoredAt and that became visible only now. (Results.Save
// stamps with the database's clock, which a test cannot set.)
func insert(ctx context.Context, rs *store.Results, r job.Result) error {
	_, err := rs.Collection().InsertOne(ctx, r)
	return err
}

// start runs f until the test ends and returns Run's error channel.
func start(t *testing.T, f *feed.Feed, sink feed.Sink) <-chan error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx, sink) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("feed did not stop within 10s")
		}
	})
	return done
}

func waitMode(t *testing.T, f *feed.Feed, want string) {
	t.Helper()
	require.Eventually(t, func() bool { return f.Mode() == want }, 10*time.Second, 10*time.Millisecond, "mode %q", want)
}

func TestPollDeliversALateCommitOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	c := newCollector()
	f := feed.New(feed.Config{Mode: feed.ModePoll, PollInterval: 20 * time.Millisecond, PollLookback: 2 * time.Second,
		ID: "n1", Store: b.results, State: b.state, Logger: logger(t)})
	start(t, f, c.sink)
	waitMode(t, f, feed.ModePoll)

	now := time.Now()
	require.NoError(t, insert(ctx, b.results, result(10, now)))
	require.Eventually(t, func() bool { return c.times(10) == 1 }, 5*time.Second, 10*time.Millisecond)

	// Stamped 700ms before the one already delivered, committed after it.
	require.NoError(t, insert(ctx, b.results, result(9, now.Add(-700*time.Millisecond))))
	require.Eventually(t, func() bool { return c.times(9) == 1 }, 5*time.Second, 10*time.Millisecond)

	// Many rounds later (a newer result proves them), each was delivered once.
	require.NoError(t, insert(ctx, b.results, result(11, now.Add(time.Second))))
	require.Eventually(t, func() bool { return c.times(11) == 1 }, 5*time.Second, 10*time.Millisecond)
	time.Sleep(100 * time.Millisecond) // a few more rounds over the same window
	require.Empty(t, c.dups())
	require.Equal(t, 3, c.len())
}

func TestPollSweepFindsACommitLaterThanTheLookback(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	c := newCollector()
	f := feed.New(feed.Config{Mode: feed.ModePoll, PollInterval: 20 * time.Millisecond, PollLookback: 100 * time.Millisecond,
		SweepWindow: 10 * time.Second, SweepEvery: 50 * time.Millisecond,
		ID: "n1", Store: b.results, State: b.state, Logger: logger(t)})
	start(t, f, c.sink)
	waitMode(t, f, feed.ModePoll)

	// The sweep looks no further back than the feed's start (minus the
	// lookback): give it a second of history.
	time.Sleep(time.Second)
	now := time.Now()
	require.NoError(t, insert(ctx, b.results, result(10, now)))
	require.Eventually(t, func() bool { return c.times(10) == 1 }, 5*time.Second, 10*time.Millisecond)
	// Stored 800ms after its completion: eight lookbacks late.
	require.NoError(t, insert(ctx, b.results, result(9, now.Add(-800*time.Millisecond))))
	require.Eventually(t, func() bool { return c.times(9) == 1 }, 5*time.Second, 10*time.Millisecond)
	// Older than the sweep window: beyond what polling promises.
	require.NoError(t, insert(ctx, b.results, result(8, now.Add(-time.Minute))))
	require.NoError(t, insert(ctx, b.results, result(11, now.Add(time.Second))))
	require.Eventually(t, func() bool { return c.times(11) == 1 }, 5*time.Second, 10*time.Millisecond)
	time.Sleep(200 * time.Millisecond) // a few sweeps more
	require.Empty(t, c.dups())
	require.Zero(t, c.times(8))
	require.Equal(t, 3, c.len())
}

func TestPollPagesThroughABusyWindowOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := newCollector()
	f := feed.New(feed.Config{Mode: feed.ModePoll, PollInterval: 20 * time.Millisecond, PollLookback: 5 * time.Second,
		ID: "n1", Store: b.results, State: b.state, Logger: logger(t)})
	start(t, f, c.sink)
	waitMode(t, f, feed.ModePoll)

	// More results than one page, all inside one lookback window.
	const n = 2500
	now := time.Now()
	docs := make([]any, n)
	for i := range n {
		docs[i] = result(uint64(100+i), now.Add(time.Duration(i%700)*time.Millisecond))
	}
	_, err := b.results.Collection().InsertMany(context.Background(), docs)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return c.len() >= n }, 20*time.Second, 20*time.Millisecond)
	time.Sleep(100 * time.Millisecond)
	require.Empty(t, c.dups())
	require.Equal(t, n, c.len())
}

func TestPollStartsAfterTheLatestStoredResult(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	now := time.Now()
	// Stored before the feed starts, inside its first lookback window:
	// history, which replays send, not live events.
	require.NoError(t, insert(ctx, b.results, result(1, now.Add(-500*time.Millisecond))))
	require.NoError(t, insert(ctx, b.results, result(2, now)))
	c := newCollector()
	f := feed.New(feed.Config{Mode: feed.ModePoll, PollInterval: 20 * time.Millisecond, PollLookback: time.Second,
		ID: "n1", Store: b.results, State: b.state, Logger: logger(t)})
	start(t, f, c.sink)
	waitMode(t, f, feed.ModePoll)
	// A late commit stamped before the start is new to everybody.
	require.NoError(t, insert(ctx, b.results, result(3, now.Add(-200*time.Millisecond))))
	require.NoError(t, insert(ctx, b.results, result(4, time.Now())))
	require.Eventually(t, func() bool { return c.times(3) == 1 && c.times(4) == 1 }, 5*time.Second, 10*time.Millisecond)
	time.Sleep(100 * time.Millisecond) // a few more rounds over the same window
	require.Zero(t, c.times(1))
	require.Zero(t, c.times(2))
	require.Empty(t, c.dups())
}

// A standalone server (devmongo -replset "", as a standalone mongod)
// refuses change streams with 40573: auto mode polls, and tries again
// now and then, switching to a change stream once the server has them,
// missing and repeating nothing across the switch.
func TestAutoPollsAStandaloneAndSwitchesWhenChangeStreamsAnswer(t *testing.T) {
	t.Parallel()
	b, m := setupOwn(t, "-replset", "")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, err := feed.MongoOpener{Coll: b.results.Collection()}.Open(ctx, nil)
	var ce mongo.CommandError
	require.ErrorAs(t, err, &ce)
	require.EqualValues(t, 40573, ce.Code, "a standalone's answer")

	c := newCollector()
	var modes []string
	var mu sync.Mutex
	f := feed.New(feed.Config{Mode: feed.ModeAuto, PollInterval: 20 * time.Millisecond, PollLookback: time.Second, ProbeEvery: 200 * time.Millisecond,
		ID: "n1", Store: b.results, Opener: feed.MongoOpener{Coll: b.results.Collection(), MaxAwait: 100 * time.Millisecond}, State: b.state, Logger: logger(t),
		OnMode: func(m string) { mu.Lock(); modes = append(modes, m); mu.Unlock() }})
	start(t, f, c.sink)
	waitMode(t, f, feed.ModePoll)
	require.NoError(t, insert(ctx, b.results, result(7, time.Now())))
	require.Eventually(t, func() bool { return c.times(7) == 1 }, 5*time.Second, 10*time.Millisecond)

	// The server becomes a replica set member: the feed switches.
	m.Stop()
	require.NoError(t, m.RestartWith())
	waitMode(t, f, feed.ModeChangeStream)
	require.NoError(t, insert(ctx, b.results, result(8, time.Now())))
	require.Eventually(t, func() bool { return c.times(8) == 1 }, 10*time.Second, 10*time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	require.Equal(t, 1, c.times(7))
	require.Empty(t, c.dups())
	mu.Lock()
	require.Equal(t, []string{feed.ModePoll, feed.ModeChangeStream}, modes)
	mu.Unlock()
}

func TestChangeStreamModeRefusesAServerWithoutChangeStreams(t *testing.T) {
	t.Parallel()
	b, _ := setupOwn(t, "-replset", "")
	f := feed.New(feed.Config{Mode: feed.ModeChangeStream, ID: "n1", Store: b.results,
		Opener: feed.MongoOpener{Coll: b.results.Collection()}, State: b.state, Logger: logger(t)})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := f.Run(ctx, newCollector().sink)
	require.ErrorIs(t, err, feed.ErrNoChangeStreams)
	require.NoError(t, ctx.Err(), "Run returned at once")
	require.Empty(t, f.Mode())
}

// The integration test of the change-stream path needs a real replica set.
func TestChangeStreamAgainstAReplicaSet(t *testing.T) {
	t.Parallel()
	url := os.Getenv("MONGO_REPLSET_URL")
	if url == "" {
		t.Skip("MONGO_REPLSET_URL not set: no MongoDB replica set here (the same path runs against devmongo's change streams in changestream_test.go)")
	}
	client, err := store.Connect(url, "feed-test", 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { _ = client.Disconnect(context.Background()) })
	db := "db_" + testenv.RandomName()
	t.Cleanup(func() { _ = client.Database(db).Drop(context.Background()) })
	rs := store.NewResults(client, db, "completed")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, rs.EnsureIndexes(ctx))
	state := feed.MongoState{Coll: client.Database(db).Collection(feed.StateCollection)}

	run := func(c *collector) (*feed.Feed, context.CancelFunc, <-chan error) {
		f := feed.New(feed.Config{Mode: feed.ModeChangeStream, ID: "n1", Store: rs, State: state,
			Opener: feed.MongoOpener{Coll: rs.Collection()}, Logger: logger(t)})
		fctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- f.Run(fctx, c.sink) }()
		waitMode(t, f, feed.ModeChangeStream)
		return f, stop, done
	}
	c := newCollector()
	_, stop, done := run(c)
	require.NoError(t, insert(ctx, rs, result(1, time.Now())))
	require.Eventually(t, func() bool { return c.times(1) == 1 }, 10*time.Second, 10*time.Millisecond)
	stop()
	require.NoError(t, <-done)

	// Stored while no notifier ran: the saved token brings it.
	require.NoError(t, insert(ctx, rs, result(2, time.Now())))
	c2 := newCollector()
	_, stop, done = run(c2)
	defer func() { stop(); <-done }()
	require.Eventually(t, func() bool { return c2.times(2) == 1 }, 10*time.Second, 10*time.Millisecond)
	require.Zero(t, c2.times(1))
}

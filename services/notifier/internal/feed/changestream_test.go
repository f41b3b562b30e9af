package feed_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/store"
	"github.com/jobsys/jobs/pkg/testenv"
	"github.com/jobsys/jobs/services/notifier/internal/feed"
)

// These run the change-stream feed against devmongo's change streams with
// the real driver: the server closes cursors after an invalidate, loses
// its history when it restarts and answers as MongoDB does.

// countingOpener counts the streams opened.
type countingOpener struct {
	feed.MongoOpener
	n atomic.Int64
}

func (o *countingOpener) Open(ctx context.Context, token bson.Raw) (feed.Stream, error) {
	o.n.Add(1)
	return o.MongoOpener.Open(ctx, token)
}

// countingState counts the saves.
type countingState struct {
	feed.MongoState
	saves atomic.Int64
}

func (s *countingState) Save(ctx context.Context, id string, st feed.State) error {
	s.saves.Add(1)
	return s.MongoState.Save(ctx, id, st)
}

// runFeed runs a change-stream feed (auto mode, as the notifier's
// default) on b until stop is called or the test ends.
func runFeed(t *testing.T, b bundle, opener feed.Opener, state feed.StateStore, c *collector) (f *feed.Feed, stop func()) {
	t.Helper()
	f = feed.New(feed.Config{Mode: feed.ModeAuto, PollLookback: 2 * time.Second, ID: "n1", Store: b.results,
		Opener: opener, State: state, Logger: logger(t)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx, c.sink) }()
	var once atomic.Bool
	stop = func() {
		if once.Swap(true) {
			return
		}
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(10 * time.Second):
			t.Error("feed did not stop within 10s")
		}
	}
	t.Cleanup(stop)
	waitMode(t, f, feed.ModeChangeStream)
	return f, stop
}

// eachServer runs test against devmongo and, when MONGO_REPLSET_URL names
// one, against a real MongoDB replica set: the same scenarios on both.
func eachServer(t *testing.T, test func(t *testing.T, b bundle)) {
	t.Run("devmongo", func(t *testing.T) { t.Parallel(); test(t, setup(t)) })
	t.Run("replicaset", func(t *testing.T) {
		url := os.Getenv("MONGO_REPLSET_URL")
		if url == "" {
			t.Skip("MONGO_REPLSET_URL not set: no MongoDB replica set here")
		}
		t.Parallel()
		client, err := store.Connect(url, "feed-test", 5*time.Second)
		require.NoError(t, err)
		t.Cleanup(func() { _ = client.Disconnect(context.Background()) })
		db := "db_" + testenv.RandomName()
		t.Cleanup(func() { _ = client.Database(db).Drop(context.Background()) })
		test(t, bundle{results: store.NewResults(client, db, "completed"), state: feed.MongoState{Coll: client.Database(db).Collection(feed.StateCollection)}, client: client})
	})
}

func opener(b bundle) feed.MongoOpener {
	return feed.MongoOpener{Coll: b.results.Collection(), MaxAwait: 200 * time.Millisecond}
}

func eventually(t *testing.T, cond func() bool, msg string) {
	t.Helper()
	require.Eventually(t, cond, 10*time.Second, 10*time.Millisecond, msg)
}

// An update or replace of a stored result is not a new completion
// (issue: UpdateLookup re-broadcast every edit to every subscriber).
func TestEditsOfStoredResultsAreNotCompletions(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b bundle) {
		ctx := context.Background()
		c := newCollector()
		runFeed(t, b, opener(b), b.state, c)
		// Job 1 was stored minutes ago (a backfill edits old results), so
		// the feed's short memory of delivered ids no longer hides a repeat.
		require.NoError(t, insert(ctx, b.results, result(1, time.Now().Add(-5*time.Minute))))
		require.NoError(t, insert(ctx, b.results, result(9, time.Now())))
		eventually(t, func() bool { return c.times(1) == 1 && c.times(9) == 1 }, "the inserts are completions")
		coll := b.results.Collection()
		_, err := coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: int64(1)}}, bson.D{{Key: "$set", Value: bson.D{{Key: "worker", Value: "edited"}}}})
		require.NoError(t, err)
		_, err = coll.UpdateMany(ctx, bson.D{}, bson.D{{Key: "$set", Value: bson.D{{Key: "tube", Value: "backfill"}}}})
		require.NoError(t, err)
		r := result(1, time.Now())
		r.Worker = "replaced"
		_, err = coll.ReplaceOne(ctx, bson.D{{Key: "_id", Value: int64(1)}}, r)
		require.NoError(t, err)
		require.NoError(t, insert(ctx, b.results, result(2, time.Now())))
		eventually(t, func() bool { return c.times(2) == 1 }, "the next insert")
		require.Equal(t, 1, c.times(1), "the edits did not deliver job 1 again")
	})
}

// Dropping the results collection (mongo-express, mongorestore --drop)
// ends the stream with an invalidate and a closed cursor: the feed starts
// after it, neither spinning nor missing what is stored once the
// collection exists again.
func TestDropOfTheResultsNeitherSpinsNorStopsTheFeed(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b bundle) {
		ctx := context.Background()
		c := newCollector()
		op := &countingOpener{MongoOpener: opener(b)}
		f, _ := runFeed(t, b, op, b.state, c)
		require.NoError(t, insert(ctx, b.results, result(1, time.Now())))
		eventually(t, func() bool { return c.times(1) == 1 }, "before the drop")

		require.NoError(t, b.results.Collection().Drop(ctx))
		opensAfterDrop := op.n.Load()
		time.Sleep(time.Second)
		require.LessOrEqual(t, op.n.Load()-opensAfterDrop, int64(3), "the feed reopens once after the invalidate, not in a loop")
		require.True(t, f.Healthy())

		require.NoError(t, insert(ctx, b.results, result(2, time.Now())))
		eventually(t, func() bool { return c.times(2) == 1 }, "stored after the collection was created again")
		require.Empty(t, c.dups())
	})
}

// A stream on which the server closed the cursor without an event the
// pipeline lets through is detected and reopened (before, consume spun
// on TryNext false with no error).
func TestRenameOfTheResultsIsDetected(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b bundle) {
		ctx := context.Background()
		c := newCollector()
		op := &countingOpener{MongoOpener: opener(b)}
		runFeed(t, b, op, b.state, c)
		require.NoError(t, insert(ctx, b.results, result(1, time.Now())))
		eventually(t, func() bool { return c.times(1) == 1 }, "before the rename")
		db := b.results.Collection().Database()
		require.NoError(t, db.Client().Database("admin").RunCommand(ctx, bson.D{
			{Key: "renameCollection", Value: db.Name() + ".completed"}, {Key: "to", Value: db.Name() + ".completed_old"},
		}).Err())
		before := op.n.Load()
		time.Sleep(time.Second)
		require.LessOrEqual(t, op.n.Load()-before, int64(3))
		require.NoError(t, insert(ctx, b.results, result(2, time.Now())))
		eventually(t, func() bool { return c.times(2) == 1 }, "stored in a new results collection")
	})
}

// A restarted notifier resumes from its saved token: what was stored
// while it was down comes, once, and nothing before it again.
func TestResumesFromTheSavedToken(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b bundle) {
		ctx := context.Background()
		c := newCollector()
		_, stop := runFeed(t, b, opener(b), b.state, c)
		require.NoError(t, insert(ctx, b.results, result(1, time.Now())))
		eventually(t, func() bool { return c.times(1) == 1 }, "first run")
		stop()
		require.NoError(t, insert(ctx, b.results, result(2, time.Now())))
		c2 := newCollector()
		runFeed(t, b, opener(b), b.state, c2)
		eventually(t, func() bool { return c2.times(2) == 1 }, "stored while down")
		time.Sleep(300 * time.Millisecond)
		require.Zero(t, c2.times(1))
	})
}

// devmongo keeps its change history in memory: after it restarts, the
// saved token gets ChangeStreamHistoryLost (286), and the feed catches
// up from its last cursor, missing nothing.
func TestHistoryLostCatchesUpFromTheLastCursor(t *testing.T) {
	t.Parallel()
	b, m := setupOwn(t)
	ctx := context.Background()
	c := newCollector()
	_, stop := runFeed(t, b, opener(b), b.state, c)
	require.NoError(t, insert(ctx, b.results, result(1, time.Now())))
	eventually(t, func() bool { return c.times(1) == 1 }, "first run")
	stop()
	m.Stop()
	require.NoError(t, m.Restart())
	require.NoError(t, insert(ctx, b.results, result(2, time.Now())))
	c2 := newCollector()
	runFeed(t, b, opener(b), b.state, c2)
	eventually(t, func() bool { return c2.times(2) == 1 }, "stored while the history was lost")
	require.NoError(t, insert(ctx, b.results, result(3, time.Now())))
	eventually(t, func() bool { return c2.times(3) == 1 }, "live after the catch-up")
	require.Empty(t, c2.dups())
}

// The catch-up rewinds by the look-back: a result stamped just before
// the last cursor but committed after it is not skipped.
func TestCatchUpRewindsByTheLookback(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b bundle) {
		ctx := context.Background()
		last := time.Now().Add(-time.Second).Truncate(time.Millisecond)
		// The saved state of a notifier that delivered job 5 (stamped last)
		// with a token the server no longer has.
		require.NoError(t, b.state.Save(ctx, "n1", feed.State{
			Token:  bson.Raw(mustMarshal(t, bson.D{{Key: "_data", Value: "not a token"}})),
			Cursor: job.NewCursor(last, 5),
		}))
		require.NoError(t, insert(ctx, b.results, result(5, last)))
		require.NoError(t, insert(ctx, b.results, result(4, last.Add(-500*time.Millisecond)))) // committed late
		require.NoError(t, insert(ctx, b.results, result(6, last.Add(time.Millisecond))))
		c := newCollector()
		runFeed(t, b, opener(b), b.state, c)
		eventually(t, func() bool { return c.times(4) == 1 && c.times(6) == 1 }, "the late commit and the next one")
	})
}

// An idle stream's token advances every getMore; the feed saves it about
// once a minute, not every second.
func TestIdleStreamSavesRarely(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b bundle) {
		st := &countingState{MongoState: b.state}
		runFeed(t, b, opener(b), st, newCollector())
		time.Sleep(500 * time.Millisecond)
		before := st.saves.Load()
		time.Sleep(3 * time.Second)
		require.LessOrEqual(t, st.saves.Load()-before, int64(0), "no save in 3 idle seconds")
	})
}

func mustMarshal(t *testing.T, v any) []byte {
	b, err := bson.Marshal(v)
	require.NoError(t, err)
	return b
}

// The state of a notifier id nobody saved for StateTTL (a task slot
// scaled away, an id that changed) is removed when a notifier starts;
// recent states and its own stay.
func TestStaleStatesExpire(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	coll := b.state.Coll
	_, err := coll.InsertMany(ctx, []any{
		bson.D{{Key: "_id", Value: "gone"}, {Key: "cursor", Value: "1-1"}, {Key: "updated_at", Value: time.Now().Add(-8 * 24 * time.Hour)}},
		bson.D{{Key: "_id", Value: "recent"}, {Key: "cursor", Value: "1-1"}, {Key: "updated_at", Value: time.Now().Add(-time.Hour)}},
		bson.D{{Key: "_id", Value: "n1"}, {Key: "cursor", Value: "1-1"}, {Key: "updated_at", Value: time.Now().Add(-9 * 24 * time.Hour)}},
	})
	require.NoError(t, err)
	runFeed(t, b, opener(b), b.state, newCollector())
	var ids []string
	eventually(t, func() bool {
		ids = nil
		cur, err := coll.Find(ctx, bson.D{})
		require.NoError(t, err)
		var docs []struct {
			ID string `bson:"_id"`
		}
		require.NoError(t, cur.All(ctx, &docs))
		for _, d := range docs {
			ids = append(ids, d.ID)
		}
		return len(ids) == 2
	}, "the stale state is removed")
	require.ElementsMatch(t, []string{"recent", "n1"}, ids)
}

// finds records the read concern of every find on the results.
type finds struct {
	mu     sync.Mutex
	levels []string
}

func (f *finds) started(_ context.Context, e *event.CommandStartedEvent) {
	if e.CommandName != "find" {
		return
	}
	if coll, _ := e.Command.Lookup("find").StringValueOK(); coll != "completed" {
		return
	}
	level, _ := e.Command.Lookup("readConcern", "level").StringValueOK()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.levels = append(f.levels, level)
}

func (f *finds) all() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.levels...)
}

// The catch-up reads at read concern majority: the change stream shows
// only majority-committed writes, and a catch-up at the default "local"
// could deliver a result that a failover then rolls back.
func TestCatchUpReadsAtMajority(t *testing.T) {
	t.Parallel()
	servers := map[string]string{"devmongo": testenv.Setup(t).Mongo.URL, "replicaset": os.Getenv("MONGO_REPLSET_URL")}
	for name, url := range servers {
		t.Run(name, func(t *testing.T) {
			if url == "" {
				t.Skip("MONGO_REPLSET_URL not set: no MongoDB replica set here")
			}
			t.Parallel()
			rec := &finds{}
			client, err := mongo.Connect(options.Client().ApplyURI(url).SetMonitor(&event.CommandMonitor{Started: rec.started}))
			require.NoError(t, err)
			t.Cleanup(func() { _ = client.Disconnect(context.Background()) })
			db := "db_" + testenv.RandomName()
			t.Cleanup(func() { _ = client.Database(db).Drop(context.Background()) })
			b := bundle{results: store.NewResults(client, db, "completed"), state: feed.MongoState{Coll: client.Database(db).Collection(feed.StateCollection)}, client: client}
			ctx := context.Background()
			last := time.Now().Add(-time.Second).Truncate(time.Millisecond)
			require.NoError(t, b.state.Save(ctx, "n1", feed.State{
				Token:  bson.Raw(mustMarshal(t, bson.D{{Key: "_data", Value: "not a token"}})),
				Cursor: job.NewCursor(last, 5),
			}))
			require.NoError(t, insert(ctx, b.results, result(6, last.Add(time.Millisecond))))
			c := newCollector()
			runFeed(t, b, opener(b), b.state, c)
			eventually(t, func() bool { return c.times(6) == 1 }, "caught up")
			levels := rec.all()
			require.NotEmpty(t, levels)
			for _, l := range levels {
				require.Equal(t, "majority", l, "every catch-up find reads at majority")
			}
		})
	}
}

// recordingOpener records the token of every open.
type recordingOpener struct {
	feed.MongoOpener
	mu     sync.Mutex
	tokens []bson.Raw
}

func (o *recordingOpener) Open(ctx context.Context, token bson.Raw) (feed.Stream, error) {
	o.mu.Lock()
	o.tokens = append(o.tokens, token)
	o.mu.Unlock()
	return o.MongoOpener.Open(ctx, token)
}

func (o *recordingOpener) opened() []bson.Raw {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]bson.Raw(nil), o.tokens...)
}

// eachFailPointServer runs test on a devmongo and, when MONGO_REPLSET_URL
// names one started with enableTestCommands, on a real replica set, with
// a client of an application name of its own: the fail points it sets
// (failCommand with data.appName) fail only its commands.
var failPointMu sync.Mutex

func eachFailPointServer(t *testing.T, test func(t *testing.T, b bundle, failPoint func(data bson.D, mode any))) {
	servers := map[string]string{"devmongo": testenv.Setup(t).Mongo.URL, "replicaset": os.Getenv("MONGO_REPLSET_URL")}
	for name, url := range servers {
		t.Run(name, func(t *testing.T) {
			if url == "" {
				t.Skip("MONGO_REPLSET_URL not set: no MongoDB replica set here")
			}
			t.Parallel()
			// failCommand is one fail point per server: a second test's
			// configureFailPoint (or its cleanup's "off") would replace
			// this one's, so these tests take the server one at a time.
			failPointMu.Lock()
			t.Cleanup(failPointMu.Unlock)
			app := "feed-" + testenv.RandomName()
			client, err := store.Connect(url, app, 5*time.Second)
			require.NoError(t, err)
			t.Cleanup(func() { _ = client.Disconnect(context.Background()) })
			db := "db_" + testenv.RandomName()
			t.Cleanup(func() { _ = client.Database(db).Drop(context.Background()) })
			admin := client.Database("admin")
			failPoint := func(data bson.D, mode any) {
				err := admin.RunCommand(context.Background(), bson.D{{Key: "configureFailPoint", Value: "failCommand"}, {Key: "mode", Value: mode},
					{Key: "data", Value: append(data, bson.E{Key: "appName", Value: app})}}).Err()
				var ce mongo.CommandError
				if errors.As(err, &ce) && ce.Code == 59 {
					t.Skip("the server has no configureFailPoint: start it with --setParameter enableTestCommands=1")
				}
				require.NoError(t, err)
				t.Cleanup(func() {
					_ = admin.RunCommand(context.Background(), bson.D{{Key: "configureFailPoint", Value: "failCommand"}, {Key: "mode", Value: "off"}}).Err()
				})
			}
			test(t, bundle{results: store.NewResults(client, db, "completed"), state: feed.MongoState{Coll: client.Database(db).Collection(feed.StateCollection)}, client: client}, failPoint)
		})
	}
}

// A getMore that fails with 136 CappedPositionLost (the stream fell off
// the oplog) starts a new stream at once, without the token, and the
// catch-up delivers what was stored meanwhile: through the real driver,
// with the server's real answer.
func TestCappedPositionLostOnAGetMore(t *testing.T) {
	t.Parallel()
	eachFailPointServer(t, func(t *testing.T, b bundle, failPoint func(bson.D, any)) {
		ctx := context.Background()
		op := &recordingOpener{MongoOpener: opener(b)}
		c := newCollector()
		runFeed(t, b, op, b.state, c)
		require.NoError(t, insert(ctx, b.results, result(1, time.Now())))
		eventually(t, func() bool { return c.times(1) == 1 }, "before the failure")
		opens := len(op.opened())
		failPoint(bson.D{{Key: "failCommands", Value: bson.A{"getMore"}}, {Key: "errorCode", Value: 136}}, bson.D{{Key: "times", Value: 1}})
		// The next getMore fails (the one under way when the fail point
		// was set may still answer).
		eventually(t, func() bool { return len(op.opened()) > opens }, "a new stream is opened")
		require.Nil(t, op.opened()[opens], "without the token the server gave up on")
		require.NoError(t, insert(ctx, b.results, result(2, time.Now())))
		eventually(t, func() bool { return c.times(2) == 1 }, "stored after the failure")
		require.Empty(t, c.dups())
	})
}

// 13 Unauthorized (the user lacks the changeStream privilege) is said in
// an error log line naming the privilege and makes the feed unhealthy;
// it is retried slowly, not every few hundred milliseconds.
func TestUnauthorizedChangeStreamIsReported(t *testing.T) {
	t.Parallel()
	eachFailPointServer(t, func(t *testing.T, b bundle, failPoint func(bson.D, any)) {
		failPoint(bson.D{{Key: "failCommands", Value: bson.A{"aggregate"}}, {Key: "errorCode", Value: 13}}, "alwaysOn")
		rec := &logRecorder{}
		op := &recordingOpener{MongoOpener: opener(b)}
		f := feed.New(feed.Config{Mode: feed.ModeAuto, ID: "n1", Store: b.results, Opener: op, State: b.state, Logger: slog.New(rec)})
		start(t, f, newCollector().sink)
		eventually(t, func() bool { return rec.find("changeStream privilege") != "" }, "the log names the privilege")
		require.False(t, f.Healthy())
		time.Sleep(time.Second)
		require.Len(t, op.opened(), 1, "not retried within a second")
	})
}

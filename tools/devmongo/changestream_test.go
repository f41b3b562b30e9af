package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// server is a devmongo of the test's own, run in-process on port 0.
type server struct {
	uri  string
	stop func()
}

func start(t testing.TB, dir string, args ...string) *server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"-listen", "127.0.0.1:0", "-data", dir}, args...), pw, io.Discard)
		pw.Close()
	}()
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if s, ok := strings.CutPrefix(sc.Text(), "listening "); ok {
				line <- s
			}
		}
	}()
	var uri string
	select {
	case uri = <-line:
	case err := <-done:
		t.Fatalf("devmongo stopped at start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("devmongo did not start within 30s")
	}
	var once sync.Once
	s := &server{uri: uri, stop: func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Error("devmongo did not stop within 10s")
			}
		})
	}}
	t.Cleanup(s.stop)
	return s
}

func connect(t testing.TB, uri string) *mongo.Client {
	t.Helper()
	c, err := mongo.Connect(options.Client().ApplyURI(uri).SetServerSelectionTimeout(10 * time.Second))
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Disconnect(context.Background()) })
	return c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

type ev struct {
	ID                bson.Raw       `bson:"_id"`
	OperationType     string         `bson:"operationType"`
	ClusterTime       bson.Timestamp `bson:"clusterTime"`
	WallTime          time.Time      `bson:"wallTime"`
	NS                struct{ DB, Coll string }
	To                struct{ DB, Coll string }
	DocumentKey       bson.Raw `bson:"documentKey"`
	FullDocument      bson.Raw `bson:"fullDocument"`
	UpdateDescription struct {
		UpdatedFields bson.M   `bson:"updatedFields"`
		RemovedFields []string `bson:"removedFields"`
	} `bson:"updateDescription"`
}

// next reads the next event within d, or fails.
func next(t *testing.T, cs *mongo.ChangeStream, d time.Duration) ev {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	require.True(t, cs.Next(ctx), "no event within %s: %v", d, cs.Err())
	var e ev
	require.NoError(t, cs.Decode(&e))
	return e
}

func TestInsertEventsInCommitOrderExactlyOnce(t *testing.T) {
	t.Parallel()
	ctx, coll := openColl(t, "results")
	cs, err := coll.Watch(ctx, mongo.Pipeline{})
	require.NoError(t, err)
	defer cs.Close(ctx)

	const writers, each = 4, 50
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				_, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: int64(w*1000 + i)}, {Key: "w", Value: w}, {Key: "i", Value: i}})
				require.NoError(t, err)
			}
		})
	}
	wg.Wait()
	seen := map[int64]bool{}
	last := map[int]int{0: -1, 1: -1, 2: -1, 3: -1}
	var prev bson.Timestamp
	for range writers * each {
		e := next(t, cs, 10*time.Second)
		require.Equal(t, "insert", e.OperationType)
		require.Equal(t, "db", e.NS.DB)
		require.Equal(t, "results", e.NS.Coll)
		id := e.DocumentKey.Lookup("_id").Int64()
		require.False(t, seen[id], "event for %d twice", id)
		seen[id] = true
		require.Equal(t, id, e.FullDocument.Lookup("_id").Int64())
		w, i := int(e.FullDocument.Lookup("w").Int32()), int(e.FullDocument.Lookup("i").Int32())
		require.Equal(t, last[w]+1, i, "writer %d's inserts out of order", w)
		last[w] = i
		require.True(t, prev.Before(e.ClusterTime), "clusterTime goes forward")
		prev = e.ClusterTime
		require.WithinDuration(t, time.Now(), e.WallTime, time.Minute)
	}
	// Nothing more: each once.
	requireQuiet(t, cs)
}

func TestUpsertShapesOfTheWorker(t *testing.T) {
	t.Parallel()
	ctx, coll := openColl(t, "results")
	cs, err := coll.Watch(ctx, mongo.Pipeline{})
	require.NoError(t, err)
	defer cs.Close(ctx)

	// store.Results.Save on MongoDB: an insert-only upsert stamped by the
	// server's clock; its filter requires a field no document has.
	filter := bson.D{{Key: "_id", Value: int64(7)}, {Key: "_insert_only", Value: bson.D{{Key: "$exists", Value: true}}}}
	update := bson.D{
		{Key: "$setOnInsert", Value: bson.D{{Key: "hash", Value: "h"}, {Key: "payload", Value: "{}"}}},
		{Key: "$currentDate", Value: bson.D{{Key: "stored_at", Value: true}}},
	}
	res, err := coll.UpdateOne(ctx, filter, update, options.UpdateOne().SetUpsert(true))
	require.NoError(t, err)
	require.EqualValues(t, 7, res.UpsertedID)
	e := next(t, cs, 5*time.Second)
	require.Equal(t, "insert", e.OperationType)
	require.EqualValues(t, 7, e.FullDocument.Lookup("_id").Int64())
	require.Equal(t, "h", e.FullDocument.Lookup("hash").StringValue())
	_, ok := e.FullDocument.Lookup("stored_at").DateTimeOK()
	require.True(t, ok, "fullDocument is the stored document, stamp included: %s", e.FullDocument)
	_, err = e.FullDocument.LookupErr("_insert_only")
	require.Error(t, err, "the filter's field is not stored: %s", e.FullDocument)

	// The same job again: the filter cannot match, the insert collides.
	_, err = coll.UpdateOne(ctx, filter, update, options.UpdateOne().SetUpsert(true))
	require.True(t, mongo.IsDuplicateKeyError(err), "want a duplicate key, got %v", err)
	requireQuiet(t, cs, "a refused write makes no event")
}

func TestUpdateReplaceDeleteAndMatch(t *testing.T) {
	t.Parallel()
	ctx, coll := openColl(t, "things")
	_, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "a"}, {Key: "n", Value: 1}, {Key: "gone", Value: true}})
	require.NoError(t, err)
	all, err := coll.Watch(ctx, mongo.Pipeline{}, options.ChangeStream().SetFullDocument(options.UpdateLookup))
	require.NoError(t, err)
	defer all.Close(ctx)
	inserts, err := coll.Watch(ctx, mongo.Pipeline{{{Key: "$match", Value: bson.D{{Key: "operationType", Value: bson.D{{Key: "$in", Value: bson.A{"insert"}}}}}}}})
	require.NoError(t, err)
	defer inserts.Close(ctx)

	_, err = coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: "a"}}, bson.D{{Key: "$set", Value: bson.D{{Key: "n", Value: 2}}}, {Key: "$unset", Value: bson.D{{Key: "gone", Value: ""}}}})
	require.NoError(t, err)
	e := next(t, all, 5*time.Second)
	require.Equal(t, "update", e.OperationType)
	require.Equal(t, "a", e.DocumentKey.Lookup("_id").StringValue())
	require.EqualValues(t, 2, e.UpdateDescription.UpdatedFields["n"])
	require.Equal(t, []string{"gone"}, e.UpdateDescription.RemovedFields)
	require.EqualValues(t, 2, e.FullDocument.Lookup("n").Int32(), "updateLookup reads the document as it is now")
	_, err = coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: "a"}}, bson.D{{Key: "$set", Value: bson.D{{Key: "n", Value: 2}}}})
	require.NoError(t, err) // changes nothing: no event, as MongoDB
	_, err = coll.ReplaceOne(ctx, bson.D{{Key: "_id", Value: "a"}}, bson.D{{Key: "m", Value: 3}})
	require.NoError(t, err)
	_, err = coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "b"}})
	require.NoError(t, err)
	_, err = coll.DeleteOne(ctx, bson.D{{Key: "_id", Value: "a"}})
	require.NoError(t, err)

	e = next(t, all, 5*time.Second)
	require.Equal(t, "replace", e.OperationType)
	require.EqualValues(t, 3, e.FullDocument.Lookup("m").Int32())
	e = next(t, all, 5*time.Second)
	require.Equal(t, "insert", e.OperationType)
	e = next(t, all, 5*time.Second)
	require.Equal(t, "delete", e.OperationType)
	require.Equal(t, "a", e.DocumentKey.Lookup("_id").StringValue())

	e = next(t, inserts, 5*time.Second)
	require.Equal(t, "insert", e.OperationType)
	require.Equal(t, "b", e.DocumentKey.Lookup("_id").StringValue())
	requireQuiet(t, inserts, "$match let only the insert through")
}

func TestGetMoreWaitsAndTokenAdvancesWhileIdle(t *testing.T) {
	t.Parallel()
	ctx, coll := openColl(t, "results")
	cs, err := coll.Watch(ctx, mongo.Pipeline{}, options.ChangeStream().SetMaxAwaitTime(400*time.Millisecond))
	require.NoError(t, err)
	defer cs.Close(ctx)
	tok0 := cs.ResumeToken()
	require.NotNil(t, tok0, "the opening aggregate carries a postBatchResumeToken")

	// The driver's first TryNext returns the aggregate's (empty) first
	// batch; the next ones are getMores.
	require.False(t, cs.TryNext(ctx))
	// Idle: an empty getMore waits about maxAwaitTime, and the token moves.
	t0 := time.Now()
	require.False(t, cs.TryNext(ctx))
	require.NoError(t, cs.Err())
	waited := time.Since(t0)
	require.GreaterOrEqual(t, waited, 300*time.Millisecond)
	time.Sleep(1100 * time.Millisecond) // the cluster time ticks in seconds
	require.False(t, cs.TryNext(ctx))
	require.NotEqual(t, tok0, cs.ResumeToken(), "an idle stream's resume token advances")

	// An event ends the wait at once.
	cs2, err := coll.Watch(ctx, mongo.Pipeline{}, options.ChangeStream().SetMaxAwaitTime(5*time.Second))
	require.NoError(t, err)
	defer cs2.Close(ctx)
	require.False(t, cs2.TryNext(ctx)) // the empty first batch
	go func() {
		time.Sleep(100 * time.Millisecond)
		_, _ = coll.InsertOne(context.Background(), bson.D{{Key: "x", Value: 1}})
	}()
	slow, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	t0 = time.Now()
	require.True(t, cs2.Next(slow), "%v", cs2.Err())
	require.Less(t, time.Since(t0), 2*time.Second, "getMore returns when an event arrives, not at maxAwaitTime")
}

func TestResumeAfterAndStartAfter(t *testing.T) {
	t.Parallel()
	ctx, coll := openColl(t, "results")
	cs, err := coll.Watch(ctx, mongo.Pipeline{})
	require.NoError(t, err)
	for i := range 5 {
		_, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: i}})
		require.NoError(t, err)
	}
	e := next(t, cs, 5*time.Second)
	e = next(t, cs, 5*time.Second) // _id 1
	require.EqualValues(t, 1, e.DocumentKey.Lookup("_id").Int32())
	tok := cs.ResumeToken()
	require.NoError(t, cs.Close(ctx))

	for _, opts := range []*options.ChangeStreamOptionsBuilder{
		options.ChangeStream().SetResumeAfter(tok),
		options.ChangeStream().SetStartAfter(tok),
	} {
		r, err := coll.Watch(ctx, mongo.Pipeline{}, opts)
		require.NoError(t, err)
		for want := 2; want < 5; want++ {
			e := next(t, r, 5*time.Second)
			require.EqualValues(t, want, e.DocumentKey.Lookup("_id").Int32(), "continues exactly after the token")
		}
		require.NoError(t, r.Close(ctx))
	}

	// startAtOperationTime of the third insert's clusterTime.
	r, err := coll.Watch(ctx, mongo.Pipeline{}, options.ChangeStream().SetResumeAfter(tok))
	require.NoError(t, err)
	third := next(t, r, 5*time.Second)
	require.NoError(t, r.Close(ctx))
	r, err = coll.Watch(ctx, mongo.Pipeline{}, options.ChangeStream().SetStartAtOperationTime(&third.ClusterTime))
	require.NoError(t, err)
	defer r.Close(ctx)
	require.EqualValues(t, 2, next(t, r, 5*time.Second).DocumentKey.Lookup("_id").Int32())
}

func serverCode(err error) int32 {
	var ce mongo.CommandError
	if errors.As(err, &ce) {
		return ce.Code
	}
	var se mongo.ServerError
	if errors.As(err, &se) {
		for _, c := range []int32{260, 286, 40324, 2, 9} {
			if se.HasErrorCode(int(c)) {
				return c
			}
		}
	}
	return 0
}

func TestHistoryLostAfterRestartAndBadTokens(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := start(t, dir)
	c := connect(t, s.uri)
	ctx := ctxT(t)
	coll := c.Database("db").Collection("results")
	cs, err := coll.Watch(ctx, mongo.Pipeline{})
	require.NoError(t, err)
	_, err = coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 1}})
	require.NoError(t, err)
	next(t, cs, 5*time.Second)
	tok := cs.ResumeToken()
	_ = cs.Close(ctx)

	_, err = coll.Watch(ctx, mongo.Pipeline{}, options.ChangeStream().SetResumeAfter(bson.Raw(must(bson.Marshal(bson.D{{Key: "_data", Value: "zz"}})))))
	require.Equal(t, int32(9), serverCode(err), "a token that is not hex gets FailedToParse, as MongoDB's ResumeToken::parse: %v", err)
	_, err = coll.Watch(ctx, mongo.Pipeline{{{Key: "$unsupported", Value: bson.D{{Key: "x", Value: 1}}}}})
	require.Equal(t, int32(40324), serverCode(err), "an unknown stage is refused, not ignored: %v", err)
	_, err = coll.Watch(ctx, mongo.Pipeline{{{Key: "$project", Value: bson.D{{Key: "x", Value: bson.D{{Key: "$concat", Value: bson.A{"a", "b"}}}}}}}})
	require.Error(t, err, "a $project expression devmongo cannot evaluate is refused, not ignored")

	// A restart loses the in-memory history, as an oplog that rolled over.
	s.stop()
	_ = c.Disconnect(ctx)
	s2 := start(t, dir)
	c2 := connect(t, s2.uri)
	coll2 := c2.Database("db").Collection("results")
	n, err := coll2.CountDocuments(ctx, bson.D{})
	require.NoError(t, err)
	require.EqualValues(t, 1, n, "the data survives the restart")
	_, err = coll2.Watch(ctx, mongo.Pipeline{}, options.ChangeStream().SetResumeAfter(tok))
	require.Equal(t, int32(286), serverCode(err), "want ChangeStreamHistoryLost, got %v", err)
	// error_codes.yml puts 286 in the NonResumableChangeStreamError
	// category: the server labels it so, and drivers do not resume it.
	_, labels := codeOf(err)
	require.Contains(t, labels, "NonResumableChangeStreamError")
}

func TestHistoryBound(t *testing.T) {
	t.Parallel()
	s := start(t, t.TempDir(), "-history", "10")
	c := connect(t, s.uri)
	ctx := ctxT(t)
	coll := c.Database("db").Collection("results")
	cs, err := coll.Watch(ctx, mongo.Pipeline{})
	require.NoError(t, err)
	_, err = coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 0}})
	require.NoError(t, err)
	next(t, cs, 5*time.Second)
	tok := cs.ResumeToken()
	_ = cs.Close(ctx)
	for i := 1; i <= 20; i++ { // past the bound of 10
		_, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: i}})
		require.NoError(t, err)
	}
	_, err = coll.Watch(ctx, mongo.Pipeline{}, options.ChangeStream().SetResumeAfter(tok))
	require.Equal(t, int32(286), serverCode(err), "a resume point that fell out of the bounded history: %v", err)
}

func TestDropAndRenameInvalidate(t *testing.T) {
	t.Parallel()
	s := start(t, t.TempDir())
	c := connect(t, s.uri)
	ctx := ctxT(t)
	db := c.Database("db")
	for _, how := range []string{"drop", "rename"} {
		coll := db.Collection("c-" + how)
		_, err := coll.InsertOne(ctx, bson.D{{Key: "x", Value: 1}})
		require.NoError(t, err)
		// The notifier's filter before the fix: invalidate filtered out,
		// the cursor closed all the same.
		filtered, err := coll.Watch(ctx, mongo.Pipeline{{{Key: "$match", Value: bson.D{{Key: "operationType", Value: "insert"}}}}})
		require.NoError(t, err)
		cs, err := coll.Watch(ctx, mongo.Pipeline{})
		require.NoError(t, err)
		if how == "drop" {
			require.NoError(t, coll.Drop(ctx))
		} else {
			require.NoError(t, c.Database("admin").RunCommand(ctx, bson.D{{Key: "renameCollection", Value: "db.c-rename"}, {Key: "to", Value: "db.renamed"}}).Err())
		}
		e := next(t, cs, 5*time.Second)
		require.Equal(t, how, e.OperationType)
		if how == "rename" {
			require.Equal(t, "renamed", e.To.Coll)
		}
		inv := next(t, cs, 5*time.Second)
		require.Equal(t, "invalidate", inv.OperationType)
		require.False(t, cs.Next(ctx), "the stream ends after invalidate")
		require.EqualValues(t, 0, cs.ID(), "the server closed the cursor")

		wait, cancel := context.WithTimeout(ctx, 3*time.Second)
		require.False(t, filtered.Next(wait), "a filtered stream sees no event")
		cancel()
		require.EqualValues(t, 0, filtered.ID(), "but its cursor is closed too")

		// startAfter the invalidate: inserts into the new collection.
		after, err := coll.Watch(ctx, mongo.Pipeline{}, options.ChangeStream().SetStartAfter(inv.ID))
		require.NoError(t, err)
		_, err = coll.InsertOne(ctx, bson.D{{Key: "y", Value: 2}})
		require.NoError(t, err)
		e = next(t, after, 5*time.Second)
		require.Equal(t, "insert", e.OperationType)
		require.EqualValues(t, 2, e.FullDocument.Lookup("y").Int32())
		_, err = coll.Watch(ctx, mongo.Pipeline{}, options.ChangeStream().SetResumeAfter(inv.ID))
		require.Equal(t, int32(260), serverCode(err), "resumeAfter an invalidate is refused, as MongoDB: %v", err)
		require.NoError(t, after.Close(ctx))
	}
}

func TestReplicaSetURIAndPlainCRUD(t *testing.T) {
	t.Parallel()
	s := start(t, t.TempDir())
	ctx := ctxT(t)
	c := connect(t, s.uri+"?replicaSet=rs0")
	coll := c.Database("db").Collection("crud")
	cs, err := coll.Watch(ctx, mongo.Pipeline{})
	require.NoError(t, err)
	defer cs.Close(ctx)
	_, err = coll.InsertMany(ctx, []any{bson.D{{Key: "_id", Value: 1}, {Key: "v", Value: "a"}}, bson.D{{Key: "_id", Value: 2}, {Key: "v", Value: "b"}}})
	require.NoError(t, err)
	var got bson.M
	require.NoError(t, coll.FindOne(ctx, bson.D{{Key: "_id", Value: 2}}).Decode(&got))
	require.Equal(t, "b", got["v"])
	n, err := coll.CountDocuments(ctx, bson.D{})
	require.NoError(t, err)
	require.EqualValues(t, 2, n)
	cur, err := coll.Find(ctx, bson.D{}, options.Find().SetBatchSize(1))
	require.NoError(t, err)
	var all []bson.M
	require.NoError(t, cur.All(ctx, &all), "FerretDB's own cursors still work through the front")
	require.Len(t, all, 2)
	require.Equal(t, "insert", next(t, cs, 5*time.Second).OperationType)
	var hello bson.M
	require.NoError(t, c.Database("admin").RunCommand(ctx, bson.D{{Key: "hello", Value: 1}}).Decode(&hello))
	require.Equal(t, "rs0", hello["setName"])
	require.Nil(t, hello["topologyVersion"])

	// Standalone: change streams refused as a standalone mongod does.
	s2 := start(t, t.TempDir(), "-replset", "")
	c2 := connect(t, s2.uri)
	_, err = c2.Database("db").Collection("x").Watch(ctx, mongo.Pipeline{})
	require.Error(t, err)
	require.Contains(t, err.Error(), "replica sets")
}

// openColl starts a devmongo of the test's own and returns a collection
// of it.
func openColl(t *testing.T, name string) (context.Context, *mongo.Collection) {
	t.Helper()
	s := start(t, t.TempDir())
	return ctxT(t), connect(t, s.uri).Database("db").Collection(name)
}

// requireQuiet fails when cs yields an event within 300ms.
func requireQuiet(t *testing.T, cs *mongo.ChangeStream, msgAndArgs ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	require.False(t, cs.Next(ctx), msgAndArgs...)
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

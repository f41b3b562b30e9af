package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"
)

// These check that devmongo answers as MongoDB does where the notifier's
// feed (and anyone's driver) depends on it. Each cites its reference:
// the change-streams spec (mongodb/specifications,
// source/change-streams/change-streams.md), the server's source
// (mongodb/mongo) or its documentation. With MONGO_REPLSET_URL set, each
// runs unchanged against that replica set as well: devmongo must give
// the answers the real server gives.

// eachServer runs test on a devmongo of its own and, when
// MONGO_REPLSET_URL names one, on a real replica set, each with a fresh
// database.
func eachServer(t *testing.T, test func(t *testing.T, c *mongo.Client, db *mongo.Database)) {
	t.Helper()
	t.Run("devmongo", func(t *testing.T) {
		t.Parallel()
		s := start(t, t.TempDir())
		c := connectOne(t, s.uri)
		test(t, c, c.Database("db"))
	})
	t.Run("replicaset", func(t *testing.T) {
		url := os.Getenv("MONGO_REPLSET_URL")
		if url == "" {
			t.Skip("MONGO_REPLSET_URL not set: no MongoDB replica set here")
		}
		t.Parallel()
		c := connectOne(t, url)
		db := c.Database("devmongo_" + randomName())
		t.Cleanup(func() { _ = db.Drop(context.Background()) })
		test(t, c, db)
	})
}

// connectOne is a client with one connection, so that what a command
// leaves on its connection meets the next command.
func connectOne(t testing.TB, uri string) *mongo.Client {
	t.Helper()
	c, err := mongo.Connect(options.Client().ApplyURI(uri).SetMaxPoolSize(1).SetServerSelectionTimeout(10 * time.Second))
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Disconnect(context.Background()) })
	return c
}

func randomName() string {
	return time.Now().Format("150405") + "_" + bson.NewObjectID().Hex()[18:]
}

// An unacknowledged write (w:0: OP_MSG with moreToCome, the wire
// protocol's "the server sends no reply") gets no answer, and the
// connection stays in step: FerretDB answers such writes all the same,
// and a front that did not read that answer handed it to the next
// command on the connection (a find got an insert's reply). MongoDB
// also shows the write to change streams. Reference: the wire protocol,
// OP_MSG flagBits moreToCome ("the recipient MUST NOT send a reply").
func TestUnacknowledgedWritesKeepTheConnectionInStep(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, c *mongo.Client, db *mongo.Database) {
		ctx := ctxT(t)
		coll := db.Collection("w0")
		cs, err := coll.Watch(ctx, mongo.Pipeline{})
		require.NoError(t, err)
		defer cs.Close(ctx)
		w0 := db.Collection("w0", options.Collection().SetWriteConcern(writeconcern.Unacknowledged()))
		for i := range 5 {
			_, err := w0.InsertOne(ctx, bson.D{{Key: "_id", Value: i}})
			require.NoError(t, err)
		}
		// On the same connections, later answers are each its own.
		require.Eventually(t, func() bool {
			n, err := coll.CountDocuments(ctx, bson.D{})
			require.NoError(t, err)
			return n == 5
		}, 5*time.Second, 20*time.Millisecond)
		for i := range 5 {
			var got bson.M
			require.NoError(t, coll.FindOne(ctx, bson.D{{Key: "_id", Value: i}}).Decode(&got))
			require.EqualValues(t, i, got["_id"])
		}
		for i := range 5 {
			e := next(t, cs, 5*time.Second)
			require.Equal(t, "insert", e.OperationType)
			require.EqualValues(t, i, e.DocumentKey.Lookup("_id").Int32())
		}
	})
}

// codeOf is the server's error code and labels in err (0 for none).
func codeOf(err error) (int32, []string) {
	var ce mongo.CommandError
	if errors.As(err, &ce) {
		return ce.Code, ce.Labels
	}
	return 0, nil
}

func tokenDoc(data any) bson.Raw {
	return must(bson.Marshal(bson.D{{Key: "_data", Value: data}}))
}

// Opening a change stream with options MongoDB refuses gets MongoDB's
// codes. References (mongodb/mongo, src/mongo/db/pipeline/):
// resume_token.cpp ResumeToken::parse (40647: _data missing or not a
// string; FailedToParse: "resume token string was not a valid hex
// string"; a hex string that is no token fails in KeyString decoding),
// document_source_change_stream.cpp (50865: both startAfter and
// resumeAfter; 40674: more than one kind of resume option), the IDL
// parser (40415: unknown field in $changeStream), and
// change_stream.md "Restrictions" in the MongoDB manual (admin, local,
// config and system.* collections cannot be watched: 73).
func TestChangeStreamOpenErrors(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, c *mongo.Client, db *mongo.Database) {
		ctx := ctxT(t)
		coll := db.Collection("opens")
		_, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 1}})
		require.NoError(t, err)
		cs, err := coll.Watch(ctx, mongo.Pipeline{})
		require.NoError(t, err)
		good := cs.ResumeToken()
		require.NotNil(t, good)
		require.NoError(t, cs.Close(ctx))

		stage := func(opts bson.D) mongo.Pipeline { return mongo.Pipeline{{{Key: "$changeStream", Value: opts}}} }
		open := func(opts bson.D) error {
			// The driver adds its own $changeStream; a raw aggregate sends
			// exactly what the case says.
			return db.RunCommand(ctx, bson.D{
				{Key: "aggregate", Value: coll.Name()},
				{Key: "pipeline", Value: stage(opts)},
				{Key: "cursor", Value: bson.D{}},
			}).Err()
		}
		for _, tc := range []struct {
			name string
			opts bson.D
			code int32
		}{
			{"_data not hex", bson.D{{Key: "resumeAfter", Value: tokenDoc("not a token")}}, 9},
			{"_data not a string", bson.D{{Key: "resumeAfter", Value: tokenDoc(int32(12))}}, 40647},
			{"_data missing", bson.D{{Key: "resumeAfter", Value: bson.D{{Key: "x", Value: 1}}}}, 40647},
			{"startAfter _data not hex", bson.D{{Key: "startAfter", Value: tokenDoc("zz")}}, 9},
			{"unknown option", bson.D{{Key: "noSuchOption", Value: true}}, 40415},
			{"resumeAfter and startAfter", bson.D{{Key: "resumeAfter", Value: good}, {Key: "startAfter", Value: good}}, 50865},
			{"token and startAtOperationTime", bson.D{{Key: "resumeAfter", Value: good}, {Key: "startAtOperationTime", Value: bson.Timestamp{T: 1, I: 1}}}, 40674},
		} {
			code, _ := codeOf(open(tc.opts))
			require.Equal(t, tc.code, code, tc.name)
		}

		// Hex that is not a token: a KeyString decoding error, whose code
		// depends on the bytes; never 260, never resumable.
		code, labels := codeOf(open(bson.D{{Key: "resumeAfter", Value: tokenDoc("0123")}}))
		require.NotZero(t, code, "hex that is no token is refused")
		require.NotEqual(t, int32(260), code)
		require.NotContains(t, labels, "ResumableChangeStreamError")

		// Namespaces that cannot be watched.
		for _, ns := range [][2]string{{"admin", "x"}, {"local", "oplog.rs"}, {db.Name(), "system.views"}, {"config", "x"}} {
			_, err := c.Database(ns[0]).Collection(ns[1]).Watch(ctx, mongo.Pipeline{})
			code, _ := codeOf(err)
			require.Equal(t, int32(73), code, "%s.%s: %v", ns[0], ns[1], err)
		}
	})
}

// A token from another collection's stream cannot resume this one: the
// resumed event is not in this stream, and MongoDB answers 280
// ChangeStreamFatalError ("cannot resume stream; the resume token was
// not found", src/mongo/db/pipeline/
// document_source_change_stream_ensure_resume_token_present.cpp) with
// the NonResumableChangeStreamError label (error_codes.yml: 280 is in
// that category), on the aggregate or on the first getMore that meets
// an event.
func TestTokenOfAnotherCollection(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, c *mongo.Client, db *mongo.Database) {
		ctx := ctxT(t)
		a, b := db.Collection("a"), db.Collection("b")
		csA, err := a.Watch(ctx, mongo.Pipeline{})
		require.NoError(t, err)
		defer csA.Close(ctx)
		_, err = a.InsertOne(ctx, bson.D{{Key: "_id", Value: 1}})
		require.NoError(t, err)
		tokA := next(t, csA, 5*time.Second).ID

		csB, err := b.Watch(ctx, mongo.Pipeline{}, options.ChangeStream().SetResumeAfter(tokA))
		if err == nil {
			defer csB.Close(ctx)
			_, err = b.InsertOne(ctx, bson.D{{Key: "_id", Value: 2}})
			require.NoError(t, err)
			wait, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			require.False(t, csB.Next(wait), "no event after a token that is not in this stream")
			err = csB.Err()
		}
		code, labels := codeOf(err)
		require.Equal(t, int32(280), code, "%v", err)
		require.Contains(t, labels, "NonResumableChangeStreamError")
	})
}

// Without pre- and post-images (a collection's default, and all devmongo
// has), fullDocument whenAvailable gives update events fullDocument
// null and required fails the stream with 47 NoMatchingDocument, and the
// same for fullDocumentBeforeChange: they do not read the current
// document as updateLookup does. Reference: the spec's
// change-streams-pre_and_post_images tests ("... with
// changeStreamPreAndPostImages disabled") and the server's
// document_source_change_stream_add_post_image.cpp and
// document_source_change_stream_add_pre_image.cpp.
func TestImagesWhenAvailableOrRequired(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, c *mongo.Client, db *mongo.Database) {
		ctx := ctxT(t)
		coll := db.Collection("images")
		_, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 1}})
		require.NoError(t, err)
		type fd = options.FullDocument
		watch := func(post, pre fd) *mongo.ChangeStream {
			opts := options.ChangeStream()
			if post != "" {
				opts.SetFullDocument(post)
			}
			if pre != "" {
				opts.SetFullDocumentBeforeChange(pre)
			}
			cs, err := coll.Watch(ctx, mongo.Pipeline{}, opts)
			require.NoError(t, err)
			t.Cleanup(func() { _ = cs.Close(context.Background()) })
			return cs
		}
		postAvail := watch(options.WhenAvailable, "")
		preAvail := watch("", options.WhenAvailable)
		postReq := watch(options.Required, "")
		preReq := watch("", options.Required)
		_, err = coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: 1}}, bson.D{{Key: "$set", Value: bson.D{{Key: "x", Value: 1}}}})
		require.NoError(t, err)

		var got bson.Raw
		wait := func(cs *mongo.ChangeStream) bool {
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			ok := cs.Next(ctx)
			got = cs.Current
			return ok
		}
		require.True(t, wait(postAvail), "%v", postAvail.Err())
		v, err := got.LookupErr("fullDocument")
		require.NoError(t, err, "fullDocument is there: %s", got)
		require.Equal(t, bson.TypeNull, v.Type, "and null: no post-image, no lookup")
		require.True(t, wait(preAvail), "%v", preAvail.Err())
		v, err = got.LookupErr("fullDocumentBeforeChange")
		require.NoError(t, err, "fullDocumentBeforeChange is there: %s", got)
		require.Equal(t, bson.TypeNull, v.Type)
		for _, cs := range []*mongo.ChangeStream{postReq, preReq} {
			require.False(t, wait(cs), "required without images: no event but an error")
			code, _ := codeOf(cs.Err())
			require.Equal(t, int32(47), code, "NoMatchingDocument: %v", cs.Err())
		}
	})
}

// updateDescription names the paths an update statement changed, as
// MongoDB's (5.0+) delta oplog entries do: $set of a.b is {"a.b": 2}, not
// the whole a; a nested $unset is removedFields ["a.c"]; $push is the
// new element's path arr.N; a $set of a new nested path names its first
// new field; a $set of a whole field names that field. Reference: the
// manual's "Change Events: update" (updateDescription) and the server's
// src/mongo/db/update/v2_log_builder.cpp.
func TestUpdateDescriptionPaths(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, c *mongo.Client, db *mongo.Database) {
		ctx := ctxT(t)
		coll := db.Collection("paths")
		_, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 1}, {Key: "a", Value: bson.D{{Key: "b", Value: 1}, {Key: "c", Value: 1}}}, {Key: "arr", Value: bson.A{1, 2}}, {Key: "x", Value: 1}})
		require.NoError(t, err)
		cs, err := coll.Watch(ctx, mongo.Pipeline{})
		require.NoError(t, err)
		defer cs.Close(ctx)
		id := bson.D{{Key: "_id", Value: 1}}
		for _, tc := range []struct {
			update  bson.D
			updated bson.M
			removed []string
		}{
			{bson.D{{Key: "$set", Value: bson.D{{Key: "a.b", Value: 2}}}}, bson.M{"a.b": int32(2)}, []string{}},
			{bson.D{{Key: "$unset", Value: bson.D{{Key: "a.c", Value: ""}}}}, bson.M{}, []string{"a.c"}},
			{bson.D{{Key: "$push", Value: bson.D{{Key: "arr", Value: 3}}}}, bson.M{"arr.2": int32(3)}, []string{}},
			{bson.D{{Key: "$set", Value: bson.D{{Key: "arr.0", Value: 9}}}}, bson.M{"arr.0": int32(9)}, []string{}},
			{bson.D{{Key: "$set", Value: bson.D{{Key: "n.m", Value: 1}}}}, bson.M{"n": bson.D{{Key: "m", Value: int32(1)}}}, []string{}},
			{bson.D{{Key: "$set", Value: bson.D{{Key: "a", Value: bson.D{{Key: "b", Value: 5}}}}}}, bson.M{"a": bson.D{{Key: "b", Value: int32(5)}}}, []string{}},
			{bson.D{{Key: "$inc", Value: bson.D{{Key: "x", Value: 1}}}, {Key: "$unset", Value: bson.D{{Key: "n", Value: ""}}}}, bson.M{"x": int32(2)}, []string{"n"}},
		} {
			_, err := coll.UpdateOne(ctx, id, tc.update)
			require.NoError(t, err)
			e := next(t, cs, 5*time.Second)
			require.Equal(t, "update", e.OperationType)
			require.Equal(t, tc.updated, e.UpdateDescription.UpdatedFields, "%v", tc.update)
			require.ElementsMatch(t, tc.removed, e.UpdateDescription.RemovedFields, "%v", tc.update)
		}
	})
}

// One update command with several statements makes one event per
// statement, each with what that statement changed, in order; a
// statement that matches what an earlier one wrote sees it. Reference:
// each statement is its own oplog entry (the server's
// src/mongo/db/ops/write_ops_exec.cpp performs them one by one).
func TestOneEventPerUpdateStatement(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, c *mongo.Client, db *mongo.Database) {
		ctx := ctxT(t)
		coll := db.Collection("stmts")
		_, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 1}, {Key: "v", Value: 0}})
		require.NoError(t, err)
		cs, err := coll.Watch(ctx, mongo.Pipeline{})
		require.NoError(t, err)
		defer cs.Close(ctx)
		res, err := coll.BulkWrite(ctx, []mongo.WriteModel{
			mongo.NewUpdateOneModel().SetFilter(bson.D{{Key: "_id", Value: 1}}).SetUpdate(bson.D{{Key: "$set", Value: bson.D{{Key: "v", Value: 1}}}}),
			mongo.NewUpdateOneModel().SetFilter(bson.D{{Key: "v", Value: 1}}).SetUpdate(bson.D{{Key: "$set", Value: bson.D{{Key: "w", Value: 2}}}}),
			mongo.NewUpdateOneModel().SetFilter(bson.D{{Key: "_id", Value: 1}}).SetUpdate(bson.D{{Key: "$set", Value: bson.D{{Key: "v", Value: 3}}}}),
		})
		require.NoError(t, err)
		require.EqualValues(t, 3, res.ModifiedCount)
		for _, want := range []bson.M{{"v": int32(1)}, {"w": int32(2)}, {"v": int32(3)}} {
			e := next(t, cs, 5*time.Second)
			require.Equal(t, "update", e.OperationType)
			require.Equal(t, want, e.UpdateDescription.UpdatedFields)
		}
		requireQuiet(t, cs, "three statements, three events")
	})
}

// Drops and renames as MongoDB logs them: a drop of a collection that
// never existed writes no oplog entry, so no drop event and no
// invalidate; dropDatabase does not end a stream on a collection of it
// that never existed; renaming another collection onto the watched one
// gives rename and invalidate; resumeAfter a drop's token gives its
// invalidate again. Reference: change-streams.md ("invalidate"), the
// manual's "Change Events" (drop, rename, invalidate), and the server's
// change_stream_filter_helpers.cpp (a collection stream's invalidation
// filter).
func TestDropsAndRenamesAsMongoDB(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, c *mongo.Client, db *mongo.Database) {
		ctx := ctxT(t)
		admin := c.Database("admin")
		watch := func(name string, opts ...options.Lister[options.ChangeStreamOptions]) *mongo.ChangeStream {
			cs, err := db.Collection(name).Watch(ctx, mongo.Pipeline{}, opts...)
			require.NoError(t, err)
			t.Cleanup(func() { _ = cs.Close(context.Background()) })
			return cs
		}

		// Never existed: the drop makes nothing; the stream lives on.
		never := watch("never")
		require.NoError(t, db.Collection("never").Drop(ctx))
		_, err := db.Collection("never").InsertOne(ctx, bson.D{{Key: "_id", Value: 1}})
		require.NoError(t, err)
		require.Equal(t, "insert", next(t, never, 5*time.Second).OperationType, "no drop, no invalidate before the insert")

		// Renaming onto the watched collection: rename, then invalidate.
		_, err = db.Collection("other").InsertOne(ctx, bson.D{{Key: "_id", Value: 1}})
		require.NoError(t, err)
		target := watch("never")
		require.NoError(t, admin.RunCommand(ctx, bson.D{
			{Key: "renameCollection", Value: db.Name() + ".other"}, {Key: "to", Value: db.Name() + ".never"}, {Key: "dropTarget", Value: true},
		}).Err())
		var e ev
		for e = next(t, target, 5*time.Second); e.OperationType != "rename"; e = next(t, target, 5*time.Second) {
			require.NotEqual(t, "invalidate", e.OperationType, "rename comes before the invalidate")
		}
		require.Equal(t, "other", e.NS.Coll)
		require.Equal(t, "never", e.To.Coll)
		require.Equal(t, "invalidate", next(t, target, 5*time.Second).OperationType)

		// resumeAfter a drop's token: the invalidate again.
		dropped := watch("never")
		require.NoError(t, db.Collection("never").Drop(ctx))
		drop := next(t, dropped, 5*time.Second)
		require.Equal(t, "drop", drop.OperationType)
		again := watch("never", options.ChangeStream().SetResumeAfter(drop.ID))
		require.Equal(t, "invalidate", next(t, again, 5*time.Second).OperationType)

		// dropDatabase leaves a stream on a collection that never existed.
		_, err = db.Collection("some").InsertOne(ctx, bson.D{{Key: "_id", Value: 1}})
		require.NoError(t, err)
		ghost := watch("ghost")
		require.NoError(t, db.Drop(ctx))
		_, err = db.Collection("ghost").InsertOne(ctx, bson.D{{Key: "_id", Value: 2}})
		require.NoError(t, err)
		require.Equal(t, "insert", next(t, ghost, 5*time.Second).OperationType, "no invalidate for a collection that never existed")
	})
}

// A database stream (aggregate: 1) sees every collection's events, their
// drops included, and ends with dropDatabase and an invalidate; a cluster
// stream sees every database. Reference: the manual's "Change Events"
// (drop, dropDatabase, invalidate: "for streams opened on a database,
// after a dropDatabase") and the spec's unified change-streams tests
// ("Executing a watch helper on a Database/MongoClient ...").
func TestDatabaseAndClusterStreams(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, c *mongo.Client, db *mongo.Database) {
		ctx := ctxT(t)
		dbs, err := db.Watch(ctx, mongo.Pipeline{})
		require.NoError(t, err)
		defer dbs.Close(ctx)
		// Other tests write to other databases meanwhile.
		all, err := c.Watch(ctx, mongo.Pipeline{{{Key: "$match", Value: bson.D{{Key: "ns.db", Value: db.Name()}}}}})
		require.NoError(t, err)
		defer all.Close(ctx)
		_, err = db.Collection("a").InsertOne(ctx, bson.D{{Key: "_id", Value: 1}})
		require.NoError(t, err)
		require.NoError(t, db.Collection("a").Drop(ctx))
		_, err = db.Collection("b").InsertOne(ctx, bson.D{{Key: "_id", Value: 2}})
		require.NoError(t, err)
		require.NoError(t, db.Drop(ctx))
		for _, want := range []string{"insert a", "drop a", "insert b", "drop b", "dropDatabase ", "invalidate "} {
			e := next(t, dbs, 5*time.Second)
			require.Equal(t, want, e.OperationType+" "+e.NS.Coll)
		}
		for _, want := range []string{"insert a", "drop a", "insert b", "drop b", "dropDatabase "} {
			e := next(t, all, 5*time.Second)
			require.Equal(t, want, e.OperationType+" "+e.NS.Coll)
			require.Equal(t, db.Name(), e.NS.DB)
		}
	})
}

// failCommand's data.appName limits a fail point to the connections of
// one application (its handshake's client.application.name), so tests
// on a shared server fail only their own commands. Reference: the
// server's failCommand fail point (service_entry_point_common.cpp,
// "appName") and the unified test format's failPoint operation.
func TestFailPointOfOneApplication(t *testing.T) {
	t.Parallel()
	s := start(t, t.TempDir())
	ctx := ctxT(t)
	mine := must(mongo.Connect(options.Client().ApplyURI(s.uri).SetAppName("mine")))
	theirs := must(mongo.Connect(options.Client().ApplyURI(s.uri).SetAppName("theirs")))
	t.Cleanup(func() { _ = mine.Disconnect(context.Background()); _ = theirs.Disconnect(context.Background()) })
	require.NoError(t, mine.Database("admin").RunCommand(ctx, bson.D{
		{Key: "configureFailPoint", Value: "failCommand"}, {Key: "mode", Value: bson.D{{Key: "times", Value: 1}}},
		{Key: "data", Value: bson.D{{Key: "failCommands", Value: bson.A{"find"}}, {Key: "errorCode", Value: 2}, {Key: "appName", Value: "mine"}}},
	}).Err())
	require.ErrorIs(t, theirs.Database("db").Collection("x").FindOne(ctx, bson.D{}).Err(), mongo.ErrNoDocuments, "not theirs")
	err := mine.Database("db").Collection("x").FindOne(ctx, bson.D{}).Err()
	code, _ := codeOf(err)
	require.Equal(t, int32(2), code, "%v", err)
	require.ErrorIs(t, mine.Database("db").Collection("x").FindOne(ctx, bson.D{}).Err(), mongo.ErrNoDocuments, "{times: 1}: once")
	// What a fail point cannot do is refused, never ignored.
	err = mine.Database("admin").RunCommand(ctx, bson.D{
		{Key: "configureFailPoint", Value: "failCommand"}, {Key: "mode", Value: "alwaysOn"},
		{Key: "data", Value: bson.D{{Key: "failCommands", Value: bson.A{"find"}}, {Key: "blockConnection", Value: true}, {Key: "errorCode", Value: 1}}},
	}).Err()
	require.Error(t, err)
}

// An update of several statements answers as one: its write errors at
// their statement's index, an ordered one stopping at the first, an
// unordered one going on; only what was applied makes events.
// Reference: the update command's reply (writeErrors[].index) in the
// manual, and write_ops_exec.cpp.
func TestUpdateStatementsErrorsKeepTheirIndex(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, c *mongo.Client, db *mongo.Database) {
		ctx := ctxT(t)
		for _, ordered := range []bool{true, false} {
			coll := db.Collection(fmt.Sprintf("errs-%v", ordered))
			_, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 1}, {Key: "s", Value: "text"}, {Key: "n", Value: 0}})
			require.NoError(t, err)
			cs, err := coll.Watch(ctx, mongo.Pipeline{})
			require.NoError(t, err)
			id := bson.D{{Key: "_id", Value: 1}}
			_, err = coll.BulkWrite(ctx, []mongo.WriteModel{
				mongo.NewUpdateOneModel().SetFilter(id).SetUpdate(bson.D{{Key: "$inc", Value: bson.D{{Key: "n", Value: 1}}}}),
				mongo.NewUpdateOneModel().SetFilter(id).SetUpdate(bson.D{{Key: "$inc", Value: bson.D{{Key: "s", Value: 1}}}}), // not a number
				mongo.NewUpdateOneModel().SetFilter(id).SetUpdate(bson.D{{Key: "$inc", Value: bson.D{{Key: "n", Value: 10}}}}),
			}, options.BulkWrite().SetOrdered(ordered))
			var bwe mongo.BulkWriteException
			require.ErrorAs(t, err, &bwe)
			require.Len(t, bwe.WriteErrors, 1)
			require.Equal(t, 1, bwe.WriteErrors[0].Index, "the second statement's error")
			want := []bson.M{{"n": int32(1)}}
			if !ordered {
				want = append(want, bson.M{"n": int32(11)})
			}
			for _, w := range want {
				require.Equal(t, w, next(t, cs, 5*time.Second).UpdateDescription.UpdatedFields, "ordered %v", ordered)
			}
			requireQuiet(t, cs, "ordered %v: no event for what was not applied", ordered)
			require.NoError(t, cs.Close(ctx))
		}
	})
}

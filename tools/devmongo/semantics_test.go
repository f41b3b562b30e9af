package main

import (
	"context"
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

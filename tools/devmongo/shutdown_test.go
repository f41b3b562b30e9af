package main

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// TestStopsPromptly: devmongo stops within a second or two of being told
// (SIGTERM in the binary), though clients still hold connections and a
// change stream is open, so that a stack's stop or a test's cleanup is
// not held up: FerretDB gives connections still open at its stop a few
// seconds to close, and devmongo's own are closed before it is stopped.
func TestStopsPromptly(t *testing.T) {
	t.Parallel()
	s := start(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client, err := mongo.Connect(options.Client().ApplyURI(s.uri))
	require.NoError(t, err)
	defer func() {
		cancel() // ends the getMore below
		dctx, stop := context.WithTimeout(context.Background(), time.Second)
		defer stop()
		_ = client.Disconnect(dctx)
	}()
	coll := client.Database("shutdown").Collection("c")
	cs, err := coll.Watch(ctx, mongo.Pipeline{})
	require.NoError(t, err)
	_, err = coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 1}})
	require.NoError(t, err)
	require.True(t, cs.Next(ctx), "%v", cs.Err())
	go func() { cs.Next(ctx) }() // a getMore waiting on the server

	begin := time.Now()
	s.stop()
	took := time.Since(begin)
	t.Logf("stopped in %s", took)
	require.Less(t, took, 2*time.Second)
}

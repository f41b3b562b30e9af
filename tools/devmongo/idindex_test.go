package main

import (
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// plan returns SQLite's query plan for a find of filter in coll, as
// FerretDB's explain reports it.
func plan(t *testing.T, coll *mongo.Collection, filter bson.D) string {
	t.Helper()
	var out struct {
		QueryPlanner struct {
			Plan []string `bson:"Plan"`
		} `bson:"queryPlanner"`
		FilterPushdown bool `bson:"filterPushdown"`
	}
	cmd := bson.D{{Key: "explain", Value: bson.D{{Key: "find", Value: coll.Name()}, {Key: "filter", Value: filter}}}}
	require.NoError(t, coll.Database().RunCommand(ctxT(t), cmd).Decode(&out))
	require.True(t, out.FilterPushdown, "FerretDB hands SQLite no filter for %v", filter)
	return strings.Join(out.QueryPlanner.Plan, "\n")
}

// A lookup by a string _id, the one filter FerretDB hands SQLite, must
// search an index rather than scan the table: in a collection created
// while devmongo runs (indexed within a second) and in one that was
// there when it started (indexed before it serves).
func TestIDLookupSearchesAnIndex(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := start(t, dir)
	db := connect(t, s.uri).Database("idx")
	coll := db.Collection("results")
	docs := make([]any, 50)
	for i := range docs {
		docs[i] = bson.D{{Key: "_id", Value: fmt.Sprint(i)}, {Key: "n", Value: i}}
	}
	_, err := coll.InsertMany(ctxT(t), docs)
	require.NoError(t, err)

	// A connection reads the new schema when it next runs a statement that
	// reads the table: EXPLAIN on a connection that has not yet still
	// shows the old plan, so each try runs a lookup first.
	require.Eventually(t, func() bool {
		require.NoError(t, coll.FindOne(ctxT(t), bson.D{{Key: "_id", Value: "7"}}).Err())
		return strings.Contains(plan(t, coll, bson.D{{Key: "_id", Value: "7"}}), "SEARCH")
	}, 10*time.Second, 100*time.Millisecond, "a new collection's _id lookups still scan:\n%s", plan(t, coll, bson.D{{Key: "_id", Value: "7"}}))
	var got bson.M
	require.NoError(t, coll.FindOne(ctxT(t), bson.D{{Key: "_id", Value: "7"}}).Decode(&got))
	require.EqualValues(t, 7, got["n"])

	// Drop the index, as a data directory from before devmongo made it
	// would lack it; a restart indexes the table before serving.
	s.stop()
	dropIndexes(t, dir)
	s = start(t, dir)
	coll = connect(t, s.uri).Database("idx").Collection("results")
	p := plan(t, coll, bson.D{{Key: "_id", Value: "7"}})
	require.Contains(t, p, "SEARCH", "an existing collection's _id lookups scan after a restart")
	require.NotContains(t, p, "SCAN")
}

// dropIndexes removes the indexes devmongo added to the database files
// in dir, while devmongo is stopped.
func dropIndexes(t *testing.T, dir string) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.sqlite"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		db, err := sql.Open("sqlite", "file:"+f+"?mode=rw")
		require.NoError(t, err)
		rows, err := db.Query(`SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE '%devmongo_id_path'`)
		require.NoError(t, err)
		var names []string
		for rows.Next() {
			var n string
			require.NoError(t, rows.Scan(&n))
			names = append(names, n)
		}
		require.NoError(t, rows.Close())
		for _, n := range names {
			_, err := db.Exec(`DROP INDEX "` + n + `"`)
			require.NoError(t, err)
		}
		require.NoError(t, db.Close())
	}
}

package store_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/jobsys/jobs/pkg/store"
	"github.com/jobsys/jobs/pkg/testenv"
)

// A FerretDB collection written with numeric ids (before the keyed
// layout, or by hand) keeps them: what Save adds is numeric too, and
// every read finds old and new results alike. An empty collection gets
// the keyed layout.
func TestFerretDBKeepsNumericIDs(t *testing.T) {
	t.Parallel()
	client, db := devmongo.open(t)
	ctx := testenv.Context(t, 30*time.Second)
	coll := "results_" + testenv.RandomName()
	old := result(7, "old", base)
	old.StoredAt = base
	_, err := client.Database(db).Collection(coll).InsertOne(ctx, old)
	require.NoError(t, err)

	s := store.NewResults(client, db, coll, store.WithServer(store.FerretDB))
	require.NoError(t, s.EnsureIndexes(ctx))
	require.NoError(t, s.Save(ctx, result(12, "new", base)))
	var keys []bson.RawValue
	cur, err := s.Collection().Find(ctx, bson.D{})
	require.NoError(t, err)
	for cur.Next(ctx) {
		keys = append(keys, cur.Current.Lookup("_id"))
	}
	require.Len(t, keys, 2)
	for _, id := range keys {
		require.Equal(t, bson.TypeInt64, id.Type, "ids stay numbers")
	}

	got, err := s.Find(ctx, 7)
	require.NoError(t, err)
	require.Equal(t, old, got)
	many, err := s.FindMany(ctx, []uint64{7, 12, 13})
	require.NoError(t, err)
	require.Len(t, many, 2)
	max, err := s.MaxID(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 12, max)
	after, err := s.After(ctx, base, 7, 0)
	require.NoError(t, err)
	require.Equal(t, []uint64{12}, ids(after))
	require.ErrorIs(t, s.Save(ctx, result(7, "old", base)), store.ErrAlreadyStored)
}

// On FerretDB MaxID reads a few ids below the bound Save keeps instead
// of sorting the whole collection: a result written around the store,
// above the bound, is not seen while the ids just below the bound hold
// a result. When they hold none (saves that failed after raising the
// bound), MaxID reads the whole collection.
func TestFerretDBMaxIDByBound(t *testing.T) {
	t.Parallel()
	client, db := devmongo.open(t)
	ctx := testenv.Context(t, 30*time.Second)
	coll := "results_" + testenv.RandomName()
	s := store.NewResults(client, db, coll, store.WithServer(store.FerretDB))
	for _, id := range []uint64{3, 300, 7} {
		require.NoError(t, s.Save(ctx, result(id, "p", base)))
	}
	max, err := s.MaxID(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 300, max)

	// Written around the store, so above the bound (384) unknown to it.
	around := bson.D{{Key: "_id", Value: "00000000000000001000"}, {Key: "hash", Value: "h"}, {Key: "payload", Value: "p"}}
	_, err = s.Collection().InsertOne(ctx, around)
	require.NoError(t, err)
	max, err = s.MaxID(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 300, max, "MaxID read the bound, not the collection")

	// A bound far above what is stored: MaxID reads everything.
	_, err = client.Database(db).Collection(coll+"_max_id").UpdateOne(ctx, bson.D{{Key: "_id", Value: "max_id"}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "v", Value: int64(5000)}}}})
	require.NoError(t, err)
	max, err = s.MaxID(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1000, max)

	// A save above the bound raises it.
	require.NoError(t, s.Save(ctx, result(6000, "p", base)))
	max, err = s.MaxID(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 6000, max)
}

// The key Save stores a result under on FerretDB is what devmongo
// indexes: looking it up is an index search, not a scan of the table.
func TestFerretDBFindSearchesAnIndex(t *testing.T) {
	t.Parallel()
	client, db := devmongo.open(t)
	ctx := testenv.Context(t, 30*time.Second)
	s := store.NewResults(client, db, "results_"+testenv.RandomName(), store.WithServer(store.FerretDB))
	for id := range uint64(20) {
		require.NoError(t, s.Save(ctx, result(id+1, "p", base)))
	}
	var stored struct {
		ID bson.RawValue `bson:"_id"`
	}
	require.NoError(t, s.Collection().FindOne(ctx, bson.D{}).Decode(&stored))
	filter := bson.D{{Key: "_id", Value: stored.ID}}
	plan := func() string {
		var out struct {
			QueryPlanner struct {
				Plan []string `bson:"Plan"`
			} `bson:"queryPlanner"`
		}
		cmd := bson.D{{Key: "explain", Value: bson.D{{Key: "find", Value: s.Collection().Name()}, {Key: "filter", Value: filter}}}}
		require.NoError(t, s.Collection().Database().RunCommand(ctx, cmd).Decode(&out))
		return strings.Join(out.QueryPlanner.Plan, "\n")
	}
	// devmongo indexes a new table within a second; a connection sees the
	// index at its next read of the table, so each try reads first.
	require.Eventually(t, func() bool {
		_, err := s.Find(ctx, 1)
		require.NoError(t, err)
		return strings.Contains(plan(), "SEARCH")
	}, 10*time.Second, 100*time.Millisecond, "plan: %s", plan())
}

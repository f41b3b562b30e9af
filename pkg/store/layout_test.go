package store_test

import (
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


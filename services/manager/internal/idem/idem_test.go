package idem_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/jobsys/jobs/pkg/store"
	"github.com/jobsys/jobs/pkg/testenv"
	"github.com/jobsys/jobs/services/manager/internal/idem"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func TestValidKey(t *testing.T) {
	t.Parallel()
	for k, ok := range map[string]bool{
		"a": true, "550e8400-e29b-41d4-a716-446655440000": true, string(make([]byte, 256)): false,
		"": false, "a b": false, "a\"b": false, "é": false, "\x7f": false,
	} {
		require.Equal(t, ok, idem.ValidKey(k), "%q", k)
	}
	long := make([]byte, idem.MaxKeyLen)
	for i := range long {
		long[i] = 'k'
	}
	require.True(t, idem.ValidKey(string(long)))
	require.False(t, idem.ValidKey(string(long)+"k"))
}

// TestClaimOutcomes walks one key through its life: claimed, in
// progress for a second request, replayed once done, refused for another
// request, and free again once released.
func TestClaimOutcomes(t *testing.T) {
	t.Parallel()
	b := testenv.Setup(t)
	k := idem.New(b.Mongo.Client(), b.DB, idem.Options{Window: time.Hour, Wait: 100 * time.Millisecond})
	ctx := testenv.Context(t, 20*time.Second)

	c, err := k.Claim(ctx, "k", "fp1")
	require.NoError(t, err)
	require.Equal(t, idem.Claimed, c.Outcome)
	again, err := k.Claim(ctx, "k", "fp1")
	require.NoError(t, err)
	require.Equal(t, idem.InProgress, again.Outcome)
	require.NoError(t, k.Done(ctx, c, idem.Record{ID: 7, Tube: "t", State: "ready"}))
	again, err = k.Claim(ctx, "k", "fp1")
	require.NoError(t, err)
	require.Equal(t, idem.Replay, again.Outcome)
	require.Equal(t, idem.Record{ID: 7, Tube: "t", State: "ready"}, again.Record)
	other, err := k.Claim(ctx, "k", "fp2")
	require.NoError(t, err)
	require.Equal(t, idem.Mismatch, other.Outcome)

	c, err = k.Claim(ctx, "u", "fp1")
	require.NoError(t, err)
	require.NoError(t, k.Unknown(ctx, c))
	again, err = k.Claim(ctx, "u", "fp1")
	require.NoError(t, err)
	require.Equal(t, idem.Unknown, again.Outcome)

	c, err = k.Claim(ctx, "r", "fp1")
	require.NoError(t, err)
	require.NoError(t, k.Release(ctx, c))
	again, err = k.Claim(ctx, "r", "fp1")
	require.NoError(t, err)
	require.Equal(t, idem.Claimed, again.Outcome, "released: the retry claims it")

	// A claim left pending past Abandon (its manager stopped) is unknown.
	short := idem.New(b.Mongo.Client(), b.DB, idem.Options{Window: time.Hour, Abandon: 50 * time.Millisecond})
	_, err = short.Claim(ctx, "p", "fp1")
	require.NoError(t, err)
	time.Sleep(100 * time.Millisecond)
	again, err = short.Claim(ctx, "p", "fp1")
	require.NoError(t, err)
	require.Equal(t, idem.Unknown, again.Outcome)
}

// TestConcurrentClaims: of many claims of one key at once, one wins.
func TestConcurrentClaims(t *testing.T) {
	t.Parallel()
	b := testenv.Setup(t)
	k := idem.New(b.Mongo.Client(), b.DB, idem.Options{Window: time.Hour, Wait: 50 * time.Millisecond})
	ctx := testenv.Context(t, 20*time.Second)
	var wg sync.WaitGroup
	outcomes := make([]idem.Outcome, 20)
	for i := range outcomes {
		wg.Go(func() {
			c, err := k.Claim(ctx, "race", "fp")
			require.NoError(t, err)
			outcomes[i] = c.Outcome
		})
	}
	wg.Wait()
	claimed := 0
	for _, o := range outcomes {
		if o == idem.Claimed {
			claimed++
		} else {
			require.Equal(t, idem.InProgress, o)
		}
	}
	require.Equal(t, 1, claimed)
}

// TestMaintainSweepsOnFerretDB: FerretDB has no TTL monitor, so Maintain
// deletes expired records itself.
func TestMaintainSweepsOnFerretDB(t *testing.T) {
	t.Parallel()
	b := testenv.Setup(t)
	k := idem.New(b.Mongo.Client(), b.DB, idem.Options{Window: 100 * time.Millisecond})
	ctx, cancel := context.WithCancel(testenv.Context(t, 20*time.Second))
	defer cancel()
	for _, key := range []string{"a", "b"} {
		_, err := k.Claim(ctx, key, "fp")
		require.NoError(t, err)
	}
	coll := b.Mongo.Client().Database(b.DB).Collection(idem.Collection)
	done := make(chan struct{})
	go func() {
		defer close(done)
		k.Maintain(ctx, func(context.Context) (store.Server, error) { return store.FerretDB, nil }, 50*time.Millisecond)
	}()
	require.Eventually(t, func() bool {
		n, err := coll.CountDocuments(ctx, bson.D{})
		return err == nil && n == 0
	}, 10*time.Second, 50*time.Millisecond)
	cancel()
	<-done
}

// TestManagersShareTheSweep: three managers on FerretDB sweep at most
// once per interval between them (a lease), not once each, and sweep the
// whole collection once per FullSweepEvery intervals.
func TestManagersShareTheSweep(t *testing.T) {
	t.Parallel()
	b := testenv.Setup(t)
	ctx, cancel := context.WithCancel(testenv.Context(t, 30*time.Second))
	defer cancel()
	var sweeps, full, tries atomic.Int32
	monitor := &event.CommandMonitor{Started: func(_ context.Context, e *event.CommandStartedEvent) {
		if e.CommandName != "find" {
			return
		}
		switch e.Command.Lookup("find").StringValue() {
		case idem.Collection:
			if f, _ := e.Command.Lookup("filter").DocumentOK(); len(f) > 5 {
				full.Add(1) // a filter by time: the whole collection
			} else {
				sweeps.Add(1) // none: the start of the record order
			}
		case idem.Collection + "_lease":
			tries.Add(1)
		}
	}}
	const every = 300 * time.Millisecond
	var wg sync.WaitGroup
	start := time.Now()
	for range 3 {
		client, err := mongo.Connect(options.Client().ApplyURI(b.Mongo.URL).SetMonitor(monitor))
		require.NoError(t, err)
		t.Cleanup(func() { _ = client.Disconnect(context.Background()) })
		k := idem.New(client, b.DB, idem.Options{Window: time.Hour})
		wg.Go(func() {
			k.Maintain(ctx, func(context.Context) (store.Server, error) { return store.FerretDB, nil }, every)
		})
	}
	time.Sleep(2 * time.Second)
	cancel()
	wg.Wait()
	periods := int32(time.Since(start)/every) + 1
	t.Logf("%d sweeps, %d full ones, %d lease reads in %d periods", sweeps.Load(), full.Load(), tries.Load(), periods)
	require.GreaterOrEqual(t, sweeps.Load(), int32(1))
	require.GreaterOrEqual(t, tries.Load(), 2*sweeps.Load(), "the others found the lease held")
	// One per period, and rarely a second when two read the lease as due
	// within one round trip.
	require.LessOrEqual(t, sweeps.Load(), periods+2)
	// The full sweep's period is FullSweepEvery intervals: once here,
	// twice if the run spans the end of one.
	require.GreaterOrEqual(t, full.Load(), int32(1))
	require.LessOrEqual(t, full.Load(), int32(2))
}

// TestWritesByKeyOnFerretDB: once Maintain has learned that the records
// live on FerretDB, Done, Release and Unknown send filters of exactly
// {_id: key} (what devmongo looks up by index, where {_id, token} reads
// every record), and still leave a record that another claim took over
// alone.
func TestWritesByKeyOnFerretDB(t *testing.T) {
	t.Parallel()
	b := testenv.Setup(t)
	ctx, cancel := context.WithCancel(testenv.Context(t, 30*time.Second))
	defer cancel()
	var mu sync.Mutex
	var filters []bson.Raw
	var leaseRead atomic.Bool
	monitor := &event.CommandMonitor{Started: func(_ context.Context, e *event.CommandStartedEvent) {
		coll, _ := e.Command.Lookup(e.CommandName).StringValueOK()
		if coll == idem.Collection+"_lease" {
			leaseRead.Store(true)
		}
		if coll != idem.Collection {
			return
		}
		field := map[string]string{"update": "updates", "delete": "deletes"}[e.CommandName]
		if field == "" {
			return
		}
		vals, _ := e.Command.Lookup(field).Array().Values()
		mu.Lock()
		defer mu.Unlock()
		for _, v := range vals {
			filters = append(filters, v.Document().Lookup("q").Document())
		}
	}}
	client, err := mongo.Connect(options.Client().ApplyURI(b.Mongo.URL).SetMonitor(monitor))
	require.NoError(t, err)
	t.Cleanup(func() { _ = client.Disconnect(context.Background()) })
	k := idem.New(client, b.DB, idem.Options{Window: time.Hour, Wait: 50 * time.Millisecond})
	done := make(chan struct{})
	go func() {
		defer close(done)
		k.Maintain(ctx, func(context.Context) (store.Server, error) { return store.FerretDB, nil }, time.Hour)
	}()
	require.Eventually(t, leaseRead.Load, 10*time.Second, 10*time.Millisecond, "Maintain asked which server")

	c, err := k.Claim(ctx, "d", "fp")
	require.NoError(t, err)
	require.NoError(t, k.Done(ctx, c, idem.Record{ID: 7, Tube: "t", State: "ready"}))
	again, err := k.Claim(ctx, "d", "fp")
	require.NoError(t, err)
	require.Equal(t, idem.Replay, again.Outcome)
	require.Equal(t, uint64(7), again.Record.ID)

	c, err = k.Claim(ctx, "u", "fp")
	require.NoError(t, err)
	require.NoError(t, k.Unknown(ctx, c))
	again, err = k.Claim(ctx, "u", "fp")
	require.NoError(t, err)
	require.Equal(t, idem.Unknown, again.Outcome)

	c, err = k.Claim(ctx, "r", "fp")
	require.NoError(t, err)
	require.NoError(t, k.Release(ctx, c))
	again, err = k.Claim(ctx, "r", "fp")
	require.NoError(t, err)
	require.Equal(t, idem.Claimed, again.Outcome)

	// A claim taken over (its token replaced) is not written by the old one.
	coll := client.Database(b.DB).Collection(idem.Collection)
	c, err = k.Claim(ctx, "x", "fp")
	require.NoError(t, err)
	_, err = coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: "x"}}, bson.D{{Key: "$set", Value: bson.D{{Key: "token", Value: "other"}}}})
	require.NoError(t, err)
	require.NoError(t, k.Done(ctx, c, idem.Record{ID: 9}))
	require.NoError(t, k.Release(ctx, c))
	var rec struct {
		State string `bson:"state"`
	}
	require.NoError(t, coll.FindOne(ctx, bson.D{{Key: "_id", Value: "x"}}).Decode(&rec))
	require.Equal(t, "pending", rec.State)

	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, filters)
	for _, q := range filters {
		elems, err := q.Elements()
		require.NoError(t, err)
		require.Len(t, elems, 1, "filter %s", q)
		require.Equal(t, "_id", elems[0].Key(), "filter %s", q)
		require.Equal(t, bson.TypeString, elems[0].Value().Type, "filter %s", q)
	}
	cancel()
	<-done
}

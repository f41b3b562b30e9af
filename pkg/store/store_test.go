package store_test

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/store"
	"github.com/jobsys/jobs/pkg/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// server is a database server the contract runs against; open returns a
// client and a fresh database on it, or skips saying why it cannot.
type server struct {
	name string
	open func(t *testing.T) (*mongo.Client, string)
}

var (
	devmongo = server{"devmongo", func(t *testing.T) (*mongo.Client, string) {
		b := testenv.Setup(t)
		return connect(t, b.Mongo.URL), b.DB
	}}
	replicaSet = server{"replicaset", func(t *testing.T) (*mongo.Client, string) {
		url := os.Getenv("MONGO_REPLSET_URL")
		if url == "" {
			t.Skip("MONGO_REPLSET_URL not set: no MongoDB replica set here, so the MongoDB implementation ran against devmongo only")
		}
		client := connect(t, url)
		db := "db_" + testenv.RandomName()
		t.Cleanup(func() { _ = client.Database(db).Drop(context.Background()) })
		return client, db
	}}
)

// targets are the (implementation, server) pairs of the contract: both
// implementations against devmongo (MongoDB's upsert reads the whole
// collection on FerretDB, which small test sets afford), and MongoDB's
// against a real replica set when there is one. FerretDB's behaviour on
// MongoDB is no configuration anyone runs.
var targets = []struct {
	impl   store.Server
	server server
}{
	{store.FerretDB, devmongo},
	{store.MongoDB, devmongo},
	{store.MongoDB, replicaSet},
}

func connect(t *testing.T, url string) *mongo.Client {
	t.Helper()
	client, err := store.Connect(url, "store-test", 2*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { _ = client.Disconnect(context.Background()) })
	return client
}

// bundle is what a contract case gets: a store of implementation impl on
// a fresh collection, its indexes made as the services make them.
type bundle struct {
	s      *store.Results
	ctx    context.Context
	impl   store.Server
	client *mongo.Client
}

// contract is what every implementation does on every server. It is the
// one place the two implementations are checked; where they differ by
// design (clock, indexes, counting) the case says what each must do.
var contract = []struct {
	name string
	run  func(t *testing.T, b bundle)
}{
	{"SaveAndFind", testSaveAndFind},
	{"SameWorkAgainIsAlreadyStored", testSameWorkAgain},
	{"DifferentWorkConflicts", testDifferentWork},
	{"UnstampedDocumentIsNeverTouched", testUnstampedDocument},
	{"ConcurrentSavesOfOneID", testConcurrentSaves},
	{"FindMissing", testFindMissing},
	{"FindMany", testFindMany},
	{"MaxID", testMaxID},
	{"AfterInStoredOrder", testAfter},
	{"AfterTiesByID", testAfterTies},
	{"Import", testImport},
	{"Last", testLast},
	{"CountBetween", testCountBetween},
	{"Latest", testLatest},
	{"QuickCount", testQuickCount},
	{"BeforeAndTotal", testBeforeAndTotal},
	{"KickedBefore", testKickedBefore},
	{"EnsureIndexesAgainAndConcurrently", testEnsureIndexes},
	{"Ping", testPing},
}

func TestContract(t *testing.T) {
	t.Parallel()
	for _, tg := range targets {
		t.Run(string(tg.impl)+"/"+tg.server.name, func(t *testing.T) {
			t.Parallel()
			client, db := tg.server.open(t)
			for _, c := range contract {
				t.Run(c.name, func(t *testing.T) {
					t.Parallel()
					ctx := testenv.Context(t, 30*time.Second)
					s := store.NewResults(client, db, "results_"+testenv.RandomName(), store.WithServer(tg.impl))
					require.NoError(t, s.EnsureIndexes(ctx))
					c.run(t, bundle{s: s, ctx: ctx, impl: tg.impl, client: client})
				})
			}
		})
	}
}

func result(id uint64, payload string, at time.Time) job.Result {
	return job.Result{ID: id, Hash: job.Hash(payload), Payload: payload, Tube: "default", Worker: "w1", Attempts: 1,
		StartedAt: at.Add(-time.Millisecond), CompletedAt: at, DurationMS: 1}
}

var base = time.UnixMilli(1_700_000_000_000).UTC()

// clock reads the clock that stamps stored_at: the server's (hello's
// localTime) for MongoDB's implementation, this process's for FerretDB's.
func (b bundle) clock(t *testing.T) time.Time {
	t.Helper()
	if b.impl != store.MongoDB {
		return time.Now()
	}
	var hello struct {
		LocalTime time.Time `bson:"localTime"`
	}
	require.NoError(t, b.client.Database("admin").RunCommand(b.ctx, bson.D{{Key: "hello", Value: 1}}).Decode(&hello))
	require.False(t, hello.LocalTime.IsZero(), "hello answers localTime")
	return hello.LocalTime
}

// save saves r and returns it as stored.
func (b bundle) save(t *testing.T, r job.Result) job.Result {
	t.Helper()
	require.NoError(t, b.s.Save(b.ctx, r))
	got, err := b.s.Find(b.ctx, r.ID)
	require.NoError(t, err)
	return got
}

// saveApart saves rs one after another on distinct milliseconds, so that
// stored order is save order, and returns them as stored.
func (b bundle) saveApart(t *testing.T, rs ...job.Result) []job.Result {
	t.Helper()
	out := make([]job.Result, len(rs))
	for i, r := range rs {
		out[i] = b.save(t, r)
		for b.clock(t).Truncate(time.Millisecond).Equal(out[i].StoredAt) {
			time.Sleep(time.Millisecond)
		}
	}
	return out
}

func ids(rs []job.Result) []uint64 {
	out := []uint64{}
	for _, r := range rs {
		out = append(out, r.ID)
	}
	return out
}

// Save writes the result as given, with stored_at stamped by the
// implementation's clock at the save, whatever StoredAt the caller set.
func testSaveAndFind(t *testing.T, b bundle) {
	r := result(1, `{"example":"data"}`, base)
	r.StoredAt = base.Add(-time.Hour)
	before := b.clock(t).Truncate(time.Millisecond)
	got := b.save(t, r)
	after := b.clock(t)
	require.False(t, got.StoredAt.Before(before) || got.StoredAt.After(after),
		"stored_at %s is stamped at the save by the %s clock, between %s and %s", got.StoredAt, b.impl, before, after)
	r.StoredAt = got.StoredAt
	require.Equal(t, r, got)

	// The document holds the result's fields and nothing else, under the
	// id as a number on MongoDB and as 20 decimal digits on FerretDB,
	// which looks strings up by index.
	var raw, want bson.M
	require.NoError(t, b.s.Collection().FindOne(b.ctx, bson.D{}).Decode(&raw))
	enc, err := bson.Marshal(r)
	require.NoError(t, err)
	require.NoError(t, bson.Unmarshal(enc, &want))
	if b.impl == store.FerretDB {
		want["_id"] = "00000000000000000001"
	}
	require.Equal(t, want, raw)
}

// The same job again (a redelivery): reported, not duplicated, and the
// stored result unchanged.
func testSameWorkAgain(t *testing.T, b bundle) {
	first := b.save(t, result(1, `{"a":1}`, base))
	again := result(1, `{"a":1}`, base.Add(time.Second))
	again.Worker, again.Attempts = "w2", 2
	require.ErrorIs(t, b.s.Save(b.ctx, again), store.ErrAlreadyStored)
	got, err := b.s.Find(b.ctx, 1)
	require.NoError(t, err)
	require.Equal(t, first, got)
	n, err := b.s.Collection().CountDocuments(b.ctx, bson.D{})
	require.NoError(t, err)
	require.EqualValues(t, 1, n)
}

// A different job under the same id: refused, stored one unchanged.
func testDifferentWork(t *testing.T, b bundle) {
	first := b.save(t, result(1, `{"a":1}`, base))
	err := b.s.Save(b.ctx, result(1, `{"other":1}`, base))
	require.ErrorIs(t, err, store.ErrConflict)
	require.NotErrorIs(t, err, store.ErrAlreadyStored)
	got, err := b.s.Find(b.ctx, 1)
	require.NoError(t, err)
	require.Equal(t, first, got)
}

// A document without stored_at, as the original system stored results
// (_id, hash, payload), is never written to: the same work is already
// stored, other work conflicts, and the document keeps its three fields.
func testUnstampedDocument(t *testing.T, b bundle) {
	payload := `{"from":"node"}`
	old := bson.D{{Key: "_id", Value: int64(3)}, {Key: "hash", Value: job.Hash(payload)}, {Key: "payload", Value: payload}}
	_, err := b.s.Collection().InsertOne(b.ctx, old)
	require.NoError(t, err)

	require.ErrorIs(t, b.s.Save(b.ctx, result(3, payload, base)), store.ErrAlreadyStored)
	require.ErrorIs(t, b.s.Save(b.ctx, result(3, `{"other":1}`, base)), store.ErrConflict)
	var got bson.D
	require.NoError(t, b.s.Collection().FindOne(b.ctx, bson.D{{Key: "_id", Value: int64(3)}}).Decode(&got))
	require.Equal(t, old, got)
}

// Workers that got the same job (a redelivery racing the first try) or
// jobs under one id save at the same time: one is stored, every other
// save is told whether its work is the stored one's.
func testConcurrentSaves(t *testing.T, b bundle) {
	const n = 6
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			r := result(8, fmt.Sprintf(`{"n":%d}`, i%2), base)
			r.Worker = fmt.Sprintf("w%d", i)
			errs[i] = b.s.Save(b.ctx, r)
		})
	}
	wg.Wait()
	stored, err := b.s.Find(b.ctx, 8)
	require.NoError(t, err)
	winners := 0
	for i, err := range errs {
		switch {
		case err == nil:
			winners++
			require.Equal(t, fmt.Sprintf("w%d", i), stored.Worker)
		case stored.Payload == fmt.Sprintf(`{"n":%d}`, i%2):
			require.ErrorIs(t, err, store.ErrAlreadyStored, "save %d", i)
		default:
			require.ErrorIs(t, err, store.ErrConflict, "save %d", i)
		}
	}
	require.Equal(t, 1, winners, "errors: %v", errs)
	count, err := b.s.Collection().CountDocuments(b.ctx, bson.D{})
	require.NoError(t, err)
	require.EqualValues(t, 1, count)
}

func testFindMissing(t *testing.T, b bundle) {
	_, err := b.s.Find(b.ctx, 2)
	require.ErrorIs(t, err, store.ErrNotFound)
	b.save(t, result(1, "a", base))
	_, err = b.s.Find(b.ctx, 2)
	require.ErrorIs(t, err, store.ErrNotFound)
}

// FindMany answers many ids with one query: the stored ones, each with
// its own result, and nothing for the others.
func testFindMany(t *testing.T, b bundle) {
	want := map[uint64]job.Result{}
	for _, id := range []uint64{2, 7, 40} {
		want[id] = b.save(t, result(id, fmt.Sprintf(`{"n":%d}`, id), base))
	}
	for _, tc := range []struct {
		ids  []uint64
		want map[uint64]job.Result
	}{
		{[]uint64{40, 3, 2, 7, 1 << 40}, want},
		{[]uint64{3}, map[uint64]job.Result{}},
		{nil, map[uint64]job.Result{}},
	} {
		got, err := b.s.FindMany(b.ctx, tc.ids)
		require.NoError(t, err)
		require.Equal(t, tc.want, got, "ids %v", tc.ids)
	}
}

func testMaxID(t *testing.T, b bundle) {
	n, err := b.s.MaxID(b.ctx)
	require.NoError(t, err)
	require.Zero(t, n)
	for _, id := range []uint64{5, 3, 1 << 40, 9} {
		b.save(t, result(id, "p", base))
	}
	n, err = b.s.MaxID(b.ctx)
	require.NoError(t, err)
	require.EqualValues(t, uint64(1<<40), n)
}

// afterCase is a cursor (at, id), a limit and the ids After returns.
type afterCase struct {
	at    time.Time
	id    uint64
	limit int
	want  []uint64
}

func (b bundle) checkAfter(t *testing.T, cases []afterCase) {
	t.Helper()
	for _, tc := range cases {
		got, err := b.s.After(b.ctx, tc.at, tc.id, tc.limit)
		require.NoError(t, err)
		require.Equal(t, tc.want, ids(got), "after (%s, %d) limit %d", tc.at, tc.id, tc.limit)
	}
}

// After reads in the order results were stored, whatever their ids and
// completion times, from a cursor and up to a limit.
func testAfter(t *testing.T, b bundle) {
	stored := b.saveApart(t,
		result(5, "a", base.Add(time.Hour)),
		result(3, "b", base),
		result(4, "c", base.Add(time.Minute)),
		result(9, "d", base.Add(-time.Hour)),
	)
	b.checkAfter(t, []afterCase{
		{time.Time{}, 0, 0, []uint64{5, 3, 4, 9}},
		{stored[1].StoredAt, 3, 0, []uint64{4, 9}},
		{stored[0].StoredAt, 5, 1, []uint64{3}},
		{stored[2].StoredAt, 0, 1, []uint64{4}}, // at 4's stamp a smaller id comes before it
		{stored[3].StoredAt, 9, 0, []uint64{}},
	})
}

// Results stored in the same millisecond come in id order (also past
// 9 and 10, whose digits sort otherwise), and a cursor inside the tie
// resumes after its id. Saves cannot be made to tie, so the results are
// imported with one stamp.
func testAfterTies(t *testing.T, b bundle) {
	at := b.clock(t).UTC().Truncate(time.Millisecond)
	var rs []job.Result
	for _, id := range []uint64{8, 2, 10, 5} {
		r := result(id, "p", base)
		r.StoredAt = at
		rs = append(rs, r)
	}
	later := result(1, "p", base)
	later.StoredAt = at.Add(time.Millisecond)
	n, err := b.s.Import(b.ctx, append(rs, later))
	require.NoError(t, err)
	require.Equal(t, 5, n)

	b.checkAfter(t, []afterCase{
		{time.Time{}, 0, 0, []uint64{2, 5, 8, 10, 1}},
		{at, 2, 0, []uint64{5, 8, 10, 1}},
		{at, 2, 1, []uint64{5}},
		{at, 9, 0, []uint64{10, 1}},
		{at, 10, 0, []uint64{1}},
		{at.Add(-time.Millisecond), 100, 2, []uint64{2, 5}},
	})
}

// Import writes results as given, stored_at included, and leaves ids
// that are stored already alone, counting only what it wrote.
func testImport(t *testing.T, b bundle) {
	first := b.save(t, result(3, "saved", base))
	var rs []job.Result
	for i := range 5 {
		r := result(uint64(i+1), fmt.Sprintf("imported %d", i), base)
		r.StoredAt = base.Add(time.Duration(i) * time.Second)
		rs = append(rs, r)
	}
	n, err := b.s.Import(b.ctx, rs)
	require.NoError(t, err)
	require.Equal(t, 4, n, "id 3 was stored already")
	got, err := b.s.Find(b.ctx, 3)
	require.NoError(t, err)
	require.Equal(t, first, got)
	for _, r := range rs {
		if r.ID == 3 {
			continue
		}
		got, err := b.s.Find(b.ctx, r.ID)
		require.NoError(t, err)
		require.Equal(t, r, got)
	}
	max, err := b.s.MaxID(b.ctx)
	require.NoError(t, err)
	require.EqualValues(t, 5, max)
	n, err = b.s.Import(b.ctx, nil)
	require.NoError(t, err)
	require.Zero(t, n)
}

// QuickCount, where the implementation can count cheaply (FerretDB's),
// counts exactly: before the collection exists and as results are added
// and removed. MongoDB's says it cannot.
func testQuickCount(t *testing.T, b bundle) {
	check := func(want int64) {
		t.Helper()
		n, ok, err := b.s.QuickCount(b.ctx)
		require.NoError(t, err)
		require.Equal(t, b.impl == store.FerretDB, ok, "only FerretDB counts cheaply")
		if ok {
			require.Equal(t, want, n)
		}
	}
	check(0)
	for i := range 3 {
		b.save(t, result(uint64(10+i), fmt.Sprint(i), base))
		check(int64(i + 1))
	}
	_, err := b.s.Collection().DeleteOne(b.ctx, bson.D{{Key: "payload", Value: "1"}})
	require.NoError(t, err)
	check(2)
}

// EnsureIndexes runs at every start of every worker and notifier, often
// at the same time, on a collection that has data. MongoDB's
// implementation makes the two indexes the feed reads by, FerretDB's none.
func testEnsureIndexes(t *testing.T, b bundle) {
	b.save(t, result(1, "a", base))
	errs := make(chan error, 4)
	for range 4 {
		go func() { errs <- b.s.EnsureIndexes(b.ctx) }()
	}
	for range 4 {
		require.NoError(t, <-errs)
	}
	require.NoError(t, b.s.EnsureIndexes(b.ctx))

	specs, err := b.s.Collection().Indexes().ListSpecifications(b.ctx)
	require.NoError(t, err)
	var names []string
	for _, spec := range specs {
		names = append(names, spec.Name)
	}
	want := map[store.Server][]string{
		store.MongoDB:  {"_id_", "completed_at", "stored_at_id"},
		store.FerretDB: {"_id_"},
	}[b.impl]
	slices.Sort(names)
	require.Equal(t, want, names)
}

func testPing(t *testing.T, b bundle) {
	require.NoError(t, b.s.Ping(b.ctx))
	server, err := b.s.Server(b.ctx)
	require.NoError(t, err)
	require.Equal(t, b.impl, server, "the implementation WithServer chose")
}

// Auto asks the server: devmongo is FerretDB, a replica set is MongoDB.
// A server WithServer names is never asked, so it is known with no server
// at all.
func TestServerDetected(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		server server
		want   store.Server
	}{{devmongo, store.FerretDB}, {replicaSet, store.MongoDB}} {
		t.Run(tc.server.name, func(t *testing.T) {
			t.Parallel()
			client, db := tc.server.open(t)
			s := store.NewResults(client, db, "completed")
			got, err := s.Server(testenv.Context(t, 10*time.Second))
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
	t.Run("forced", func(t *testing.T) {
		t.Parallel()
		client, err := store.Connect("mongodb://127.0.0.1:1", "store-test", 200*time.Millisecond)
		require.NoError(t, err)
		defer client.Disconnect(context.Background())
		ctx := testenv.Context(t, 10*time.Second)
		for _, want := range []store.Server{store.MongoDB, store.FerretDB} {
			got, err := store.NewResults(client, "db", "completed", store.WithServer(want)).Server(ctx)
			require.NoError(t, err)
			require.Equal(t, want, got)
		}
		_, err = store.NewResults(client, "db", "completed").Server(ctx)
		require.ErrorIs(t, err, store.ErrUnavailable, "auto asks, and nothing answers on port 1")
	})
}

// Every implementation reports an unreachable server as ErrUnavailable,
// soon, and works again when it returns. Auto has not asked the server
// what it is when it stops: the failed question is asked again later.
// This runs on devmongo only: a test cannot stop a replica set it does
// not own.
func TestUnavailable(t *testing.T) {
	t.Parallel()
	m := testenv.StartMongo(t)
	client, err := store.Connect(m.URL, "store-test", 500*time.Millisecond)
	require.NoError(t, err)
	defer client.Disconnect(context.Background())
	ctx := testenv.Context(t, 60*time.Second)
	impls := []store.Server{store.Auto, store.FerretDB, store.MongoDB}
	stores := map[store.Server]*store.Results{}
	for _, impl := range impls {
		stores[impl] = store.NewResults(client, "db", "results_"+string(impl), store.WithServer(impl))
	}
	require.NoError(t, stores[store.Auto].Ping(ctx))

	m.Stop()
	t.Run("down", func(t *testing.T) {
		for _, impl := range impls {
			s := stores[impl]
			t.Run(cmp.Or(string(impl), "auto"), func(t *testing.T) {
				t.Parallel()
				for name, op := range map[string]func() error{
					"Save":          func() error { return s.Save(ctx, result(1, "a", base)) },
					"Find":          func() error { _, err := s.Find(ctx, 1); return err },
					"FindMany":      func() error { _, err := s.FindMany(ctx, []uint64{1, 2}); return err },
					"After":         func() error { _, err := s.After(ctx, time.Time{}, 0, 10); return err },
					"EnsureIndexes": func() error { return s.EnsureIndexes(ctx) },
					"QuickCount":    func() error { _, _, err := s.QuickCount(ctx); return err },
					"Ping":          func() error { return s.Ping(ctx) },
				} {
					if (impl == store.MongoDB && name == "QuickCount") || (impl == store.FerretDB && name == "EnsureIndexes") {
						continue // by design it asks the server nothing
					}
					start := time.Now()
					require.ErrorIs(t, op(), store.ErrUnavailable, name)
					require.Less(t, time.Since(start), 3*time.Second, name)
				}
			})
		}
	})

	require.NoError(t, m.Restart())
	require.Eventually(t, func() bool { return stores[store.Auto].Ping(ctx) == nil }, 10*time.Second, 100*time.Millisecond)
	server, err := stores[store.Auto].Server(ctx)
	require.NoError(t, err)
	require.Equal(t, store.FerretDB, server)
	for _, impl := range impls {
		require.NoError(t, stores[impl].Save(ctx, result(1, "a", base)), "%q", impl)
	}
}

// Prepare keeps trying while the server is down, and makes the indexes
// once it is back; it stops when its context ends.
func TestPrepare(t *testing.T) {
	t.Parallel()
	m := testenv.StartMongo(t)
	client, err := store.Connect(m.URL, "store-test", 300*time.Millisecond)
	require.NoError(t, err)
	defer client.Disconnect(context.Background())
	s := store.NewResults(client, "db", "completed", store.WithServer(store.MongoDB))
	var logs testenv.LogBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))

	m.Stop()
	done := make(chan error, 1)
	go func() { done <- s.Prepare(testenv.Context(t, time.Minute), time.Second, log) }()
	require.Eventually(t, func() bool { return strings.Count(logs.String(), "trying again later") >= 2 }, 10*time.Second, 20*time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("Prepare returned while the server is down: %v", err)
	default:
	}
	require.NoError(t, m.Restart())
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		t.Fatalf("Prepare did not finish after the server came back; log:\n%s", logs.String())
	}
	require.Contains(t, logs.String(), "results store ready")
	require.Contains(t, logs.String(), "server=mongodb")
	ctx := testenv.Context(t, 10*time.Second)
	specs, err := s.Collection().Indexes().ListSpecifications(ctx)
	require.NoError(t, err)
	require.Len(t, specs, 3, "_id_ and the two of MongoDB's implementation")

	m.Stop()
	pctx, cancel := context.WithCancel(context.Background())
	tries := strings.Count(logs.String(), "trying again later")
	go func() { done <- store.NewResults(client, "db", "other").Prepare(pctx, time.Second, log) }()
	require.Eventually(t, func() bool { return strings.Count(logs.String(), "trying again later") > tries }, 10*time.Second, 20*time.Millisecond)
	cancel() // while it waits to try again
	select {
	case err := <-done:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(5 * time.Second):
		t.Fatal("Prepare did not stop when its context ended")
	}
}

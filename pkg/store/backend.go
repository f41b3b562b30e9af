package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/jobsys/jobs/pkg/job"
)

// Server names the kind of database server a store talks to, which
// decides how Save stamps stored_at, which indexes EnsureIndexes makes
// and whether QuickCount can count.
type Server string

// The servers a store knows. Auto asks the server (buildInfo) at the
// first successful contact; the others force that behaviour, for a
// server buildInfo misreports and for tests.
const (
	Auto     Server = ""
	MongoDB  Server = "mongodb"
	FerretDB Server = "ferretdb"
)

// backend is what differs between the servers. Results picks one once
// and never asks which server it talks to anywhere else.
type backend interface {
	server() Server
	// insert writes r if no document has its id, stamping stored_at; a
	// taken id fails with the driver's duplicate key error.
	insert(ctx context.Context, coll *mongo.Collection, r job.Result) error
	ensureIndexes(ctx context.Context, coll *mongo.Collection) error
	quickCount(ctx context.Context, coll *mongo.Collection) (n int64, ok bool, err error)
	// key is the _id a result with id is stored under.
	key(id uint64) any
	// findMany reads the results among ids.
	findMany(ctx context.Context, coll *mongo.Collection, ids []uint64) (*mongo.Cursor, error)
	// document is r as the server stores it, stored_at as given.
	document(r job.Result) (any, error)
}

// known reports whether server names a server a store knows.
func known(server Server) bool { return server == MongoDB || server == FerretDB }

// detect asks the server what it is.
func detect(ctx context.Context, client *mongo.Client) (Server, error) {
	var info bson.M
	err := client.Database("admin").RunCommand(ctx, bson.D{{Key: "buildInfo", Value: 1}}).Decode(&info)
	if err != nil {
		return Auto, wrap("ask the server what it is (buildInfo)", err)
	}
	if _, ferret := info["ferretdbVersion"]; ferret {
		return FerretDB, nil
	}
	return MongoDB, nil
}

// mongoBackend is MongoDB: the database stamps stored_at with its own
// clock, and the feed and replays read by secondary indexes.
type mongoBackend struct{}

func (mongoBackend) server() Server { return MongoDB }

func (mongoBackend) key(id uint64) any { return int64(id) }

func (mongoBackend) document(r job.Result) (any, error) { return r, nil }

// findMany reads every id in one query, by the _id index.
func (mongoBackend) findMany(ctx context.Context, coll *mongo.Collection, ids []uint64) (*mongo.Cursor, error) {
	return findIn(ctx, coll, ids, mongoBackend{}.key)
}

func findIn(ctx context.Context, coll *mongo.Collection, ids []uint64, key func(uint64) any) (*mongo.Cursor, error) {
	in := make(bson.A, len(ids))
	for i, id := range ids {
		in[i] = key(id)
	}
	return coll.Find(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: in}}}})
}

// insertOnlyFilter is a field no stored document has. An upsert whose
// filter requires it can never match, so it can only insert: it never
// touches a stored document, not even one without stored_at as the
// original system wrote them. Servers build the inserted document from
// the filter's equality conditions only, so the field is not written.
const insertOnlyFilter = "_insert_only"

// insert upserts with $currentDate, the one way to have the server stamp
// a document; when the id is taken the insert fails with a duplicate key.
func (mongoBackend) insert(ctx context.Context, coll *mongo.Collection, r job.Result) error {
	r.StoredAt = time.Time{}
	fields, err := bson.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode result %d: %w", r.ID, err)
	}
	filter := bson.D{{Key: "_id", Value: int64(r.ID)}, {Key: insertOnlyFilter, Value: bson.D{{Key: "$exists", Value: true}}}}
	update := bson.D{
		{Key: "$setOnInsert", Value: bson.Raw(fields)},
		{Key: "$currentDate", Value: bson.D{{Key: "stored_at", Value: true}}},
	}
	_, err = coll.UpdateOne(ctx, filter, update, options.UpdateOne().SetUpsert(true))
	return err
}

// indexNames are the indexes the feed and replays read by on MongoDB,
// in the order they are created.
var indexNames = []string{"stored_at_id", "completed_at"}

// ensureIndexes creates the missing indexes, one at a time: FerretDB 1.24
// (where tests run this) drops the connection when asked to create a set
// of indexes some of which exist.
func (mongoBackend) ensureIndexes(ctx context.Context, coll *mongo.Collection) error {
	keys := map[string]bson.D{
		"stored_at_id": {{Key: "stored_at", Value: 1}, {Key: "_id", Value: 1}},
		"completed_at": {{Key: "completed_at", Value: 1}},
	}
	specs, err := coll.Indexes().ListSpecifications(ctx)
	if err != nil {
		return wrap("list indexes", err)
	}
	have := map[string]bool{}
	for _, spec := range specs {
		have[spec.Name] = true
	}
	for _, name := range indexNames {
		if have[name] {
			continue
		}
		m := mongo.IndexModel{Keys: keys[name], Options: options.Index().SetName(name)}
		if _, err := coll.Indexes().CreateOne(ctx, m); err != nil {
			return wrap("create index "+name, err)
		}
	}
	return nil
}

// quickCount: a poll reads the (stored_at, _id) index on MongoDB and costs
// what is new, and the collection statistics can be off after an unclean
// shutdown, so there is no cheap count worth having.
func (mongoBackend) quickCount(context.Context, *mongo.Collection) (int64, bool, error) {
	return 0, false, nil
}

// ferretBackend is FerretDB 1.24 on SQLite, which hands SQLite no filter
// but an _id equal to a string or ObjectID, and no sort but the record
// order (internal/backends/sqlite in its source): any other query reads
// the whole collection. So it keys each result by its id as a string of
// 20 decimal digits (zero-padded: string order is id order, for sorts
// and cursors on _id), which devmongo looks up by an index of its own
// (tools/devmongo/internal/idindex). job.Result decodes that _id as the
// number it stands for, so reads and change events are unchanged.
//
// A collection written with numeric ids (before this layout, or by hand)
// keeps them: numericIDs is set when its first document has one, and the
// store then reads as before, by scanning.
type ferretBackend struct {
	numericIDs bool
}

func (ferretBackend) server() Server { return FerretDB }

// keyDigits is the width of a FerretDB key: the digits of the largest
// uint64.
const keyDigits = 20

func (b ferretBackend) key(id uint64) any {
	if b.numericIDs {
		return int64(id)
	}
	return fmt.Sprintf("%0*d", keyDigits, id)
}

// findMany looks the ids up one by one, each an indexed search (a query
// with $in reads the whole collection on FerretDB), lookupWorkers at a
// time.
func (b ferretBackend) findMany(ctx context.Context, coll *mongo.Collection, ids []uint64) (*mongo.Cursor, error) {
	if b.numericIDs {
		return findIn(ctx, coll, ids, b.key)
	}
	return b.findEach(ctx, coll, ids, lookupWorkers)
}

// findEach looks the ids up one by one, workers at a time.
func (b ferretBackend) findEach(ctx context.Context, coll *mongo.Collection, ids []uint64, workers int) (*mongo.Cursor, error) {
	found := make([]bson.Raw, len(ids))
	err := each(ctx, workers, len(ids), func(ctx context.Context, i int) error {
		raw, err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: b.key(ids[i])}}).Raw()
		if errors.Is(err, mongo.ErrNoDocuments) {
			return nil
		}
		found[i] = raw
		return err
	})
	if err = cmp.Or(err, ctx.Err()); err != nil {
		return nil, err
	}
	docs := make([]any, 0, len(ids))
	for _, raw := range found {
		if raw != nil {
			docs = append(docs, raw)
		}
	}
	return mongo.NewCursorFromDocuments(docs, nil, nil)
}

// lookupWorkers is how many lookups of one FindMany run at once.
const lookupWorkers = 4

// insert stamps stored_at with this process's clock just before a plain
// insert, unless Save stamped it for the journal already: FerretDB
// cannot use an index in an update's filter, so MongoDB's upsert would
// read the whole collection here.
func (b ferretBackend) insert(ctx context.Context, coll *mongo.Collection, r job.Result) error {
	if r.StoredAt.IsZero() {
		r.StoredAt = time.Now().UTC().Truncate(time.Millisecond)
	}
	doc, err := b.document(r)
	if err != nil {
		return err
	}
	_, err = coll.InsertOne(ctx, doc)
	return err
}

// document is r as this layout stores it.
func (b ferretBackend) document(r job.Result) (any, error) {
	if b.numericIDs {
		return r, nil
	}
	raw, err := bson.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode result %d: %w", r.ID, err)
	}
	var doc bson.D
	if err := bson.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("encode result %d: %w", r.ID, err)
	}
	doc[0] = bson.E{Key: "_id", Value: b.key(r.ID)} // _id is the first field of job.Result
	return doc, nil
}

// layoutOf tells whether the collection keeps numeric ids, from its first
// document in record order (a query FerretDB stops after one row);
// known is false while the collection is empty.
func layoutOf(ctx context.Context, coll *mongo.Collection) (b ferretBackend, known bool, err error) {
	var first struct {
		ID bson.RawValue `bson:"_id"`
	}
	err = coll.FindOne(ctx, bson.D{}, options.FindOne().SetProjection(bson.D{{Key: "_id", Value: 1}})).Decode(&first)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return ferretBackend{}, false, nil
	}
	if err != nil {
		return ferretBackend{}, false, wrap("read the first result", err)
	}
	return ferretBackend{numericIDs: first.ID.Type != bson.TypeString}, true, nil
}

// ensureIndexes creates none: FerretDB would not use them. Indexes that
// exist are left alone.
func (ferretBackend) ensureIndexes(context.Context, *mongo.Collection) error { return nil }

// quickCount answers from a $collStats count, which FerretDB takes from
// SQLite's page statistics instead of reading the results: a poll round
// whose count has not moved reads nothing.
func (ferretBackend) quickCount(ctx context.Context, coll *mongo.Collection) (int64, bool, error) {
	pipeline := mongo.Pipeline{{{Key: "$collStats", Value: bson.D{{Key: "count", Value: bson.D{}}}}}}
	cur, err := coll.Aggregate(ctx, pipeline)
	if se := mongo.ServerError(nil); errors.As(err, &se) && se.HasErrorCode(codeNamespaceNotFound) {
		return 0, true, nil // no result stored yet
	}
	if err != nil {
		return 0, false, wrap("count results ($collStats)", err)
	}
	var out []struct {
		Count int64 `bson:"count"`
	}
	if err := cur.All(ctx, &out); err != nil {
		return 0, false, wrap("read the results count ($collStats)", err)
	}
	if len(out) != 1 {
		return 0, false, fmt.Errorf("count results ($collStats): %d answers, want 1", len(out))
	}
	return out[0].Count, true, nil
}

// codeNamespaceNotFound is the server's error code for a collection that
// does not exist.
const codeNamespaceNotFound = 26

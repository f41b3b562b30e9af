package store

import (
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
}

// backendFor returns the behaviour for server, or nil for Auto or an
// unknown name.
func backendFor(server Server) backend {
	switch server {
	case MongoDB:
		return mongoBackend{}
	case FerretDB:
		return ferretBackend{}
	}
	return nil
}

// detect asks the server what it is.
func detect(ctx context.Context, client *mongo.Client) (backend, error) {
	var info bson.M
	err := client.Database("admin").RunCommand(ctx, bson.D{{Key: "buildInfo", Value: 1}}).Decode(&info)
	if err != nil {
		return nil, wrap("ask the server what it is (buildInfo)", err)
	}
	if _, ferret := info["ferretdbVersion"]; ferret {
		return ferretBackend{}, nil
	}
	return mongoBackend{}, nil
}

// mongoBackend is MongoDB: the database stamps stored_at with its own
// clock, and the feed and replays read by secondary indexes.
type mongoBackend struct{}

func (mongoBackend) server() Server { return MongoDB }

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
// order (internal/backends/sqlite in its source): it reads whole
// collections whatever the indexes.
type ferretBackend struct{}

func (ferretBackend) server() Server { return FerretDB }

// insert stamps stored_at with this process's clock just before a plain
// insert: FerretDB cannot use an index for a numeric _id in an update's
// filter, so MongoDB's upsert would read the whole collection here.
func (ferretBackend) insert(ctx context.Context, coll *mongo.Collection, r job.Result) error {
	r.StoredAt = time.Now().UTC().Truncate(time.Millisecond)
	_, err := coll.InsertOne(ctx, r)
	return err
}

// ensureIndexes creates none: they would only make every insert dearer.
// Indexes that exist are left alone.
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

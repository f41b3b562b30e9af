// Package store is the MongoDB results store: it saves completed jobs
// without ever overwriting one, finds them by id, and reads them in
// completion order for the notifier's feed and replays.
package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/topology"

	"github.com/jobsys/jobs/pkg/job"
)

// Errors the callers match with errors.Is.
var (
	// ErrNotFound: no result has that id.
	ErrNotFound = errors.New("result not found")
	// ErrAlreadyStored: the same job's result is stored already; the
	// caller can treat its work as done.
	ErrAlreadyStored = errors.New("result already stored")
	// ErrConflict: a different job's result is stored under that id. It is
	// never overwritten.
	ErrConflict = errors.New("a different result is stored under this id")
	// ErrUnavailable: MongoDB could not be reached or did not answer in
	// time.
	ErrUnavailable = errors.New("database unavailable")
)

// Connect returns a client for uri that gives up on an unreachable server
// after timeout instead of the driver's default 30 seconds. The driver
// reconnects by itself when the server returns.
func Connect(uri, appName string, timeout time.Duration) (*mongo.Client, error) {
	opts := options.Client().ApplyURI(uri).
		SetAppName(appName).
		SetServerSelectionTimeout(timeout).
		SetConnectTimeout(timeout)
	c, err := mongo.Connect(opts)
	if err != nil {
		return nil, fmt.Errorf("connect to MongoDB: %w", err)
	}
	return c, nil
}

// Results is the collection of completed jobs.
type Results struct {
	coll *mongo.Collection

	// stamp says how Save stamps stored_at, learnt from the server on
	// first use: stampServer or stampClient.
	stampMu sync.Mutex
	stamp   int
}

const (
	stampUnknown = iota
	stampServer  // MongoDB: $currentDate, the database's own clock
	stampClient  // FerretDB: this process's clock, just before the insert
)

// NewResults returns the store for collection coll of database db.
func NewResults(client *mongo.Client, db, coll string) *Results {
	return &Results{coll: client.Database(db).Collection(coll)}
}

// Collection is the underlying collection, for change streams.
func (s *Results) Collection() *mongo.Collection { return s.coll }

// EnsureIndexes creates the indexes that the feed and replays read by,
// leaving those that exist alone.
//
// On FerretDB it creates none. FerretDB 1.24 with SQLite hands SQLite no
// filter but an _id equal to a string or ObjectID, and no sort but the
// record order (internal/backends/sqlite in its source), so it reads
// whole collections whatever the indexes; they would only make every
// insert dearer. Indexes that exist are left alone.
func (s *Results) EnsureIndexes(ctx context.Context) error {
	mode, err := s.stampMode(ctx)
	if err != nil {
		return err
	}
	if mode == stampClient {
		return nil
	}
	return s.createIndexes(ctx)
}

func (s *Results) createIndexes(ctx context.Context) error {
	want := map[string]bson.D{
		"stored_at_id": {{Key: "stored_at", Value: 1}, {Key: "_id", Value: 1}},
		"completed_at": {{Key: "completed_at", Value: 1}},
	}
	specs, err := s.coll.Indexes().ListSpecifications(ctx)
	if err != nil {
		return wrap("list indexes", err)
	}
	have := map[string]bool{}
	for _, spec := range specs {
		have[spec.Name] = true
	}
	// One at a time and only the missing ones: FerretDB 1.24 drops the
	// connection when asked to create a set of indexes some of which exist.
	for _, name := range []string{"stored_at_id", "completed_at"} {
		if have[name] {
			continue
		}
		m := mongo.IndexModel{Keys: want[name], Options: options.Index().SetName(name)}
		if _, err := s.coll.Indexes().CreateOne(ctx, m); err != nil {
			return wrap("create index "+name, err)
		}
	}
	return nil
}

// Save stores r with stored_at stamped. When a result with r's id exists
// it returns ErrAlreadyStored if it is the same job's, and ErrConflict
// otherwise; it never overwrites.
//
// On MongoDB the database stamps stored_at itself: an upsert whose filter
// cannot match a stored result inserts with $currentDate (the one way to
// have the server stamp a document), and when the id is taken the insert
// fails with a duplicate key. FerretDB cannot use an index for a numeric
// _id in an update's filter, so that upsert reads the whole collection
// there; against FerretDB this process stamps stored_at just before a
// plain insert instead.
func (s *Results) Save(ctx context.Context, r job.Result) error {
	mode, err := s.stampMode(ctx)
	if err != nil {
		return err
	}
	if mode == stampServer {
		r.StoredAt = time.Time{}
		fields, err := bson.Marshal(r)
		if err != nil {
			return fmt.Errorf("encode result %d: %w", r.ID, err)
		}
		filter := bson.D{{Key: "_id", Value: int64(r.ID)}, {Key: "stored_at", Value: bson.D{{Key: "$exists", Value: false}}}}
		update := bson.D{
			{Key: "$setOnInsert", Value: bson.Raw(fields)},
			{Key: "$currentDate", Value: bson.D{{Key: "stored_at", Value: true}}},
		}
		_, err = s.coll.UpdateOne(ctx, filter, update, options.UpdateOne().SetUpsert(true))
	} else {
		r.StoredAt = time.Now().UTC().Truncate(time.Millisecond)
		_, err = s.coll.InsertOne(ctx, r)
	}
	if err == nil {
		return nil
	}
	if !mongo.IsDuplicateKeyError(err) {
		return wrap(fmt.Sprintf("insert result %d", r.ID), err)
	}
	old, err := s.Find(ctx, r.ID)
	if err != nil {
		return fmt.Errorf("read result %d after duplicate key: %w", r.ID, err)
	}
	if old.SameWork(r) {
		return fmt.Errorf("result %d: %w", r.ID, ErrAlreadyStored)
	}
	return fmt.Errorf("result %d (stored hash %s, new hash %s): %w", r.ID, old.Hash, r.Hash, ErrConflict)
}

// stampMode asks the server once whether it is FerretDB: stampClient if it
// is, stampServer if not.
func (s *Results) stampMode(ctx context.Context) (int, error) {
	s.stampMu.Lock()
	defer s.stampMu.Unlock()
	if s.stamp != stampUnknown {
		return s.stamp, nil
	}
	var info bson.M
	err := s.coll.Database().Client().Database("admin").RunCommand(ctx, bson.D{{Key: "buildInfo", Value: 1}}).Decode(&info)
	if err != nil {
		return 0, wrap("ask the server what it is (buildInfo)", err)
	}
	s.stamp = stampServer
	if _, ferret := info["ferretdbVersion"]; ferret {
		s.stamp = stampClient
	}
	return s.stamp, nil
}

// Find returns the result with id.
func (s *Results) Find(ctx context.Context, id uint64) (job.Result, error) {
	var r job.Result
	err := s.coll.FindOne(ctx, bson.D{{Key: "_id", Value: int64(id)}}).Decode(&r)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return r, fmt.Errorf("result %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return r, wrap(fmt.Sprintf("find result %d", id), err)
	}
	return r, nil
}

// FindMany returns the stored results among ids, by id, in one query:
// ids without a result are absent from the map. On FerretDB every lookup
// by a numeric id reads the whole collection, so one query for many ids
// costs what a single Find costs.
func (s *Results) FindMany(ctx context.Context, ids []uint64) (map[uint64]job.Result, error) {
	out := make(map[uint64]job.Result, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	in := make(bson.A, len(ids))
	for i, id := range ids {
		in[i] = int64(id)
	}
	cur, err := s.coll.Find(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: in}}}})
	if err != nil {
		return nil, wrap(fmt.Sprintf("find the results of %d jobs", len(ids)), err)
	}
	defer cur.Close(ctx)
	for cur.Next(ctx) {
		var r job.Result
		if err := cur.Decode(&r); err != nil {
			return nil, fmt.Errorf("decode a result: %w", err)
		}
		out[r.ID] = r
	}
	if err := cur.Err(); err != nil {
		return nil, wrap(fmt.Sprintf("read the results of %d jobs", len(ids)), err)
	}
	return out, nil
}

// MaxID returns the largest stored id, or 0 when there is none.
func (s *Results) MaxID(ctx context.Context) (uint64, error) {
	var r struct {
		ID int64 `bson:"_id"`
	}
	opts := options.FindOne().SetSort(bson.D{{Key: "_id", Value: -1}}).SetProjection(bson.D{{Key: "_id", Value: 1}})
	err := s.coll.FindOne(ctx, bson.D{}, opts).Decode(&r)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return 0, nil
	}
	if err != nil {
		return 0, wrap("find largest id", err)
	}
	return uint64(r.ID), nil
}

// After returns up to limit results that come after (at, id) in the order
// they were stored: stored later, or in the same millisecond with a
// larger id.
func (s *Results) After(ctx context.Context, at time.Time, id uint64, limit int) ([]job.Result, error) {
	filter := bson.D{{Key: "$or", Value: bson.A{
		bson.D{{Key: "stored_at", Value: bson.D{{Key: "$gt", Value: at}}}},
		bson.D{{Key: "stored_at", Value: at}, {Key: "_id", Value: bson.D{{Key: "$gt", Value: int64(id)}}}},
	}}}
	opts := options.Find().SetSort(bson.D{{Key: "stored_at", Value: 1}, {Key: "_id", Value: 1}})
	if limit > 0 {
		opts.SetLimit(int64(limit))
	}
	cur, err := s.coll.Find(ctx, filter, opts)
	if err != nil {
		return nil, wrap("find results after cursor", err)
	}
	var out []job.Result
	if err := cur.All(ctx, &out); err != nil {
		return nil, wrap("read results after cursor", err)
	}
	return out, nil
}

// Ping checks that MongoDB answers.
func (s *Results) Ping(ctx context.Context) error {
	if err := s.coll.Database().Client().Ping(ctx, nil); err != nil {
		return wrap("ping", err)
	}
	return nil
}

// wrap adds ErrUnavailable to errors that mean the server is out of
// reach, so handlers can answer 503.
func wrap(op string, err error) error {
	if IsUnavailable(err) {
		return fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// IsUnavailable reports whether err means MongoDB could not be reached
// or did not answer in time.
func IsUnavailable(err error) bool {
	var sse topology.ServerSelectionError
	return errors.As(err, &sse) || mongo.IsNetworkError(err) || mongo.IsTimeout(err) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrUnavailable)
}

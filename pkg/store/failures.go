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

// Failure records: one document per job id whose last attempt failed, in
// the collection "<results collection>_failures" of the results'
// database. The worker writes one on every failed attempt (nothing on a
// success that had no failure before it, so a drain writes none); the
// record is removed when its job completes or is deleted and marked
// kicked when its job is kicked. The board lists them by state and tube,
// newest first, and GET /N/ adds the last error to a held job's stats.
//
// Indexes (MongoDB): (state, failed_at, _id) and (state, tube, failed_at,
// _id), both descending on time and id, for the lists; failed_at alone
// with expireAfterSeconds when RESULTS_TTL is set (see Retention). None
// on FerretDB, which reads whole collections whatever the indexes.

// FailuresSuffix is appended to the results collection's name to name the
// failure records' collection.
const FailuresSuffix = "_failures"

// MaxFailureList is the most records one List returns.
const MaxFailureList = 1000

// Errors of the failure records, matched with errors.Is.
var (
	// ErrNoFailure: no failure record has that id.
	ErrNoFailure = errors.New("no failure record")
	// ErrBadList: a List request outside its limits.
	ErrBadList = errors.New("bad failure list request")
)

// Failures is the collection of failure records.
type Failures struct {
	coll    *mongo.Collection
	results *Results // its backend choice is shared
}

// Failures returns the failure records that go with these results.
func (s *Results) Failures() *Failures {
	return &Failures{coll: s.coll.Database().Collection(s.coll.Name() + FailuresSuffix), results: s}
}

// Collection is the underlying collection.
func (f *Failures) Collection() *mongo.Collection { return f.coll }

// failureIndexes are the lists' indexes on MongoDB, created in this order.
var failureIndexes = []mongo.IndexModel{
	{Keys: bson.D{{Key: "state", Value: 1}, {Key: "failed_at", Value: -1}, {Key: "_id", Value: -1}},
		Options: options.Index().SetName("state_failed_at_id")},
	{Keys: bson.D{{Key: "state", Value: 1}, {Key: "tube", Value: 1}, {Key: "failed_at", Value: -1}, {Key: "_id", Value: -1}},
		Options: options.Index().SetName("state_tube_failed_at_id")},
}

// EnsureIndexes creates the lists' indexes on MongoDB, leaving those that
// exist alone; none on FerretDB.
func (f *Failures) EnsureIndexes(ctx context.Context) error {
	b, err := f.results.backend(ctx)
	if err != nil {
		return err
	}
	if b.server() != MongoDB {
		return nil
	}
	return createMissing(ctx, f.coll, failureIndexes)
}

// createMissing creates the indexes of models whose names the collection
// lacks, one at a time (FerretDB drops the connection when asked for a set
// some of which exist).
func createMissing(ctx context.Context, coll *mongo.Collection, models []mongo.IndexModel) error {
	have, err := indexSpecs(ctx, coll)
	if err != nil {
		return err
	}
	for _, m := range models {
		var o options.IndexOptions
		for _, set := range m.Options.List() {
			_ = set(&o)
		}
		if _, ok := have[*o.Name]; ok {
			continue
		}
		if _, err := coll.Indexes().CreateOne(ctx, m); err != nil {
			return wrap("create index "+*o.Name+" on "+coll.Name(), err)
		}
	}
	return nil
}

// indexSpecs returns the collection's indexes by name.
func indexSpecs(ctx context.Context, coll *mongo.Collection) (map[string]mongo.IndexSpecification, error) {
	specs, err := coll.Indexes().ListSpecifications(ctx)
	if err != nil {
		return nil, wrap("list indexes of "+coll.Name(), err)
	}
	have := make(map[string]mongo.IndexSpecification, len(specs))
	for _, s := range specs {
		have[s.Name] = s
	}
	return have, nil
}

// Record writes r as the job's failure record, replacing the record of
// an earlier attempt. A record of a later attempt is kept: the worker
// writes after handing the job back, so the next attempt's record can
// come first.
func (f *Failures) Record(ctx context.Context, r job.Failure) error {
	if !r.State.Valid() {
		return fmt.Errorf("record failure of job %d: unknown state %q", r.ID, r.State)
	}
	r.FailedAt = r.FailedAt.UTC().Truncate(time.Millisecond)
	// Matches no record of a later attempt: the upsert then tries to
	// insert a second document with the id, and fails.
	filter := bson.D{{Key: "_id", Value: int64(r.ID)}, {Key: "attempts", Value: bson.D{{Key: "$lte", Value: r.Attempts}}}}
	_, err := f.coll.ReplaceOne(ctx, filter, r, options.Replace().SetUpsert(true))
	if mongo.IsDuplicateKeyError(err) {
		return nil // a later attempt's record is there
	}
	if err != nil {
		return wrap(fmt.Sprintf("record failure of job %d", r.ID), err)
	}
	return nil
}

// Get returns job id's failure record, or ErrNoFailure.
func (f *Failures) Get(ctx context.Context, id uint64) (job.Failure, error) {
	var r job.Failure
	err := f.coll.FindOne(ctx, byID(id)).Decode(&r)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return r, fmt.Errorf("job %d: %w", id, ErrNoFailure)
	}
	if err != nil {
		return r, wrap(fmt.Sprintf("find failure record of job %d", id), err)
	}
	return r, nil
}

// Remove deletes job id's failure record, when there is one: its job
// completed or was deleted.
func (f *Failures) Remove(ctx context.Context, id uint64) error {
	if _, err := f.coll.DeleteOne(ctx, byID(id)); err != nil {
		return wrap(fmt.Sprintf("remove failure record of job %d", id), err)
	}
	return nil
}

// Kicked marks the buried records among ids kicked, at time at, and
// returns how many it marked.
func (f *Failures) Kicked(ctx context.Context, at time.Time, ids ...uint64) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	in := make(bson.A, len(ids))
	for i, id := range ids {
		in[i] = int64(id)
	}
	filter := bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: in}}}, {Key: "state", Value: job.FailureBuried}}
	update := bson.D{{Key: "$set", Value: bson.D{
		{Key: "state", Value: job.FailureKicked},
		{Key: "failed_at", Value: at.UTC().Truncate(time.Millisecond)},
	}}}
	res, err := f.coll.UpdateMany(ctx, filter, update)
	if err != nil {
		return 0, wrap(fmt.Sprintf("mark %d failure records kicked", len(ids)), err)
	}
	return int(res.ModifiedCount), nil
}

// KickedInTube marks kicked the n buried records of tube that beanstalkd's
// kick-tube takes (it kicks the longest buried first: the oldest
// failed_at), and returns how many it marked. kick-tube answers only a
// count, so the records are matched by that order.
func (f *Failures) KickedInTube(ctx context.Context, at time.Time, tube string, n int) (int, error) {
	if n <= 0 {
		return 0, nil
	}
	opts := options.Find().
		SetSort(bson.D{{Key: "failed_at", Value: 1}, {Key: "_id", Value: 1}}).
		SetLimit(int64(n)).
		SetProjection(bson.D{{Key: "_id", Value: 1}})
	cur, err := f.coll.Find(ctx, bson.D{{Key: "state", Value: job.FailureBuried}, {Key: "tube", Value: tube}}, opts)
	if err != nil {
		return 0, wrap(fmt.Sprintf("find buried failure records of tube %q", tube), err)
	}
	var docs []struct {
		ID int64 `bson:"_id"`
	}
	if err := cur.All(ctx, &docs); err != nil {
		return 0, wrap(fmt.Sprintf("read buried failure records of tube %q", tube), err)
	}
	ids := make([]uint64, len(docs))
	for i, d := range docs {
		ids[i] = uint64(d.ID)
	}
	return f.Kicked(ctx, at, ids...)
}

// FailureQuery selects a page of failure records.
type FailureQuery struct {
	State job.FailureState
	// Tube, when not empty, keeps only that tube's records.
	Tube string
	// Limit is the page size, 1 to MaxFailureList.
	Limit int
	// After, when not empty, is the Next of the page before.
	After job.Cursor
}

// List returns the records of q.State (and q.Tube), newest first by
// (failed_at, _id), and the cursor of the next page, empty when this is
// the last.
func (f *Failures) List(ctx context.Context, q FailureQuery) ([]job.Failure, job.Cursor, error) {
	if !q.State.Valid() {
		return nil, "", fmt.Errorf("%w: unknown state %q", ErrBadList, q.State)
	}
	if q.Limit < 1 || q.Limit > MaxFailureList {
		return nil, "", fmt.Errorf("%w: limit %d is not between 1 and %d", ErrBadList, q.Limit, MaxFailureList)
	}
	filter := bson.D{{Key: "state", Value: q.State}}
	if q.Tube != "" {
		filter = append(filter, bson.E{Key: "tube", Value: q.Tube})
	}
	if q.After != "" {
		at, id, err := q.After.Parse()
		if err != nil {
			return nil, "", fmt.Errorf("%w: %w", ErrBadList, err)
		}
		filter = append(filter, bson.E{Key: "$or", Value: bson.A{
			bson.D{{Key: "failed_at", Value: bson.D{{Key: "$lt", Value: at}}}},
			bson.D{{Key: "failed_at", Value: at}, {Key: "_id", Value: bson.D{{Key: "$lt", Value: int64(id)}}}},
		}})
	}
	opts := options.Find().
		SetSort(bson.D{{Key: "failed_at", Value: -1}, {Key: "_id", Value: -1}}).
		SetLimit(int64(q.Limit) + 1) // one more tells whether there is a next page
	cur, err := f.coll.Find(ctx, filter, opts)
	if err != nil {
		return nil, "", wrap("list failure records", err)
	}
	out := []job.Failure{}
	if err := cur.All(ctx, &out); err != nil {
		return nil, "", wrap("read failure records", err)
	}
	if len(out) <= q.Limit {
		return out, "", nil
	}
	out = out[:q.Limit]
	return out, job.CursorOfFailure(out[len(out)-1]), nil
}

func byID(id uint64) bson.D { return bson.D{{Key: "_id", Value: int64(id)}} }

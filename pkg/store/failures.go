package store

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
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
// on FerretDB, which would use none of them: there records are keyed as
// results are (see layout), so the per-job operations (Record, Get,
// Remove, marking a kicked job) are lookups by key that devmongo
// answers from its index; the lists, and finding a tube's kicked
// records, read the whole collection, which holds a record per failing
// job, not per job.

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
	// keyed: the collection is known to have FerretDB's keyed layout.
	keyed atomic.Bool
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

// layout returns how the failure records are keyed. On MongoDB, by
// their numeric ids. On FerretDB, by the 20-digit keys results have
// there (ferretBackend), so that Record, Get and Remove each run one
// query whose filter is exactly {_id: key}, which devmongo answers from
// an index; unless the collection's first record has a numeric id
// (written before this layout): the records then keep numeric ids and
// are read by scanning, as before. An empty collection, or one whose
// first record is keyed, is keyed for good: no process writes numeric
// ids into it after that (but for one whose first record it read just
// before the collection emptied).
func (f *Failures) layout(ctx context.Context) (backend, error) {
	b, err := f.results.backend(ctx)
	if err != nil || b.server() != FerretDB {
		return b, err
	}
	if f.keyed.Load() {
		return ferretBackend{}, nil
	}
	fb, _, err := layoutOf(ctx, f.coll)
	if err != nil {
		return nil, fmt.Errorf("failure records: %w", err)
	}
	if !fb.numericIDs {
		f.keyed.Store(true)
	}
	return fb, nil
}

// isKeyed reports whether b keys documents by strings FerretDB looks up
// by index.
func isKeyed(b backend) bool {
	fb, ok := b.(ferretBackend)
	return ok && !fb.numericIDs
}

// idFilter selects job id's record. An old FerretDB collection (numeric
// ids, read by scanning anyway) matches either key, so a record written
// keyed meanwhile is found too.
func idFilter(b backend, id uint64) bson.D {
	if fb, ok := b.(ferretBackend); ok && fb.numericIDs {
		return bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: bson.A{int64(id), ferretBackend{}.key(id)}}}}}
	}
	return bson.D{{Key: "_id", Value: b.key(id)}}
}

// inValues are the _ids of ids' records, for $in: in an old FerretDB
// collection each id's both keys (see idFilter).
func inValues(b backend, ids []uint64) bson.A {
	in := make(bson.A, 0, 2*len(ids))
	for _, id := range ids {
		in = append(in, b.key(id))
		if fb, ok := b.(ferretBackend); ok && fb.numericIDs {
			in = append(in, ferretBackend{}.key(id))
		}
	}
	return in
}

// Record writes r as the job's failure record, replacing the record of
// an earlier attempt. A record of a later attempt is kept: the worker
// writes after handing the job back, so the next attempt's record can
// come first.
//
// On MongoDB (and an old numeric FerretDB collection) one upsert does it,
// its filter matching no record of a later attempt. In FerretDB's keyed
// layout that filter would read the whole collection, so Record reads
// the record by key, compares attempts, and inserts or replaces by key.
// The race it accepts: a later attempt's record written between that
// read and that write is replaced by the earlier one's. That takes two
// failures of one job within one round trip to the store, while the
// worker hands a failed job back with a back-off before it writes.
func (f *Failures) Record(ctx context.Context, r job.Failure) error {
	if !r.State.Valid() {
		return fmt.Errorf("record failure of job %d: unknown state %q", r.ID, r.State)
	}
	r.FailedAt = r.FailedAt.UTC().Truncate(time.Millisecond)
	b, err := f.layout(ctx)
	if err != nil {
		return fmt.Errorf("record failure of job %d: %w", r.ID, err)
	}
	if isKeyed(b) {
		return f.recordKeyed(ctx, b, r)
	}
	// Matches no record of a later attempt: the upsert then tries to
	// insert a second document with the id, and fails.
	filter := bson.D{{Key: "_id", Value: b.key(r.ID)}, {Key: "attempts", Value: bson.D{{Key: "$lte", Value: r.Attempts}}}}
	_, err = f.coll.ReplaceOne(ctx, filter, r, options.Replace().SetUpsert(true))
	if mongo.IsDuplicateKeyError(err) {
		return nil // a later attempt's record is there
	}
	if err != nil {
		return wrap(fmt.Sprintf("record failure of job %d", r.ID), err)
	}
	return nil
}

// recordKeyed is Record in FerretDB's keyed layout: every query by key.
func (f *Failures) recordKeyed(ctx context.Context, b backend, r job.Failure) error {
	doc, err := keyedDoc(r, b.key(r.ID))
	if err != nil {
		return err
	}
	byKey := bson.D{{Key: "_id", Value: b.key(r.ID)}}
	for try := 0; ; try++ {
		var old struct {
			Attempts int `bson:"attempts"`
		}
		err := f.coll.FindOne(ctx, byKey, options.FindOne().SetProjection(bson.D{{Key: "attempts", Value: 1}})).Decode(&old)
		switch {
		case errors.Is(err, mongo.ErrNoDocuments):
			_, err = f.coll.InsertOne(ctx, doc)
			if mongo.IsDuplicateKeyError(err) && try < 3 {
				continue // another attempt's record came first: compare with it
			}
		case err != nil:
		case old.Attempts > r.Attempts:
			return nil // a later attempt's record is there
		default:
			_, err = f.coll.ReplaceOne(ctx, byKey, doc)
		}
		if err != nil {
			return wrap(fmt.Sprintf("record failure of job %d", r.ID), err)
		}
		return nil
	}
}

// keyedDoc is r as FerretDB's keyed layout stores it, under key.
func keyedDoc(r job.Failure, key any) (bson.D, error) {
	raw, err := bson.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode failure record of job %d: %w", r.ID, err)
	}
	var doc bson.D
	if err := bson.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("encode failure record of job %d: %w", r.ID, err)
	}
	doc[0] = bson.E{Key: "_id", Value: key} // _id is the first field of job.Failure
	return doc, nil
}

// Get returns job id's failure record, or ErrNoFailure.
func (f *Failures) Get(ctx context.Context, id uint64) (job.Failure, error) {
	var r job.Failure
	b, err := f.layout(ctx)
	if err != nil {
		return r, fmt.Errorf("find failure record of job %d: %w", id, err)
	}
	err = f.coll.FindOne(ctx, idFilter(b, id)).Decode(&r)
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
	b, err := f.layout(ctx)
	if err != nil {
		return fmt.Errorf("remove failure record of job %d: %w", id, err)
	}
	if _, err := f.coll.DeleteOne(ctx, idFilter(b, id)); err != nil {
		return wrap(fmt.Sprintf("remove failure record of job %d", id), err)
	}
	return nil
}

// Kicked marks the buried records among ids kicked, at time at, and
// returns how many it marked. In FerretDB's keyed layout each id is one
// read and one update by key (see KickedBefore).
func (f *Failures) Kicked(ctx context.Context, at time.Time, ids ...uint64) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	n, err := f.kicked(ctx, time.Time{}, at, ids)
	if err != nil {
		return 0, fmt.Errorf("mark %d failure records kicked: %w", len(ids), err)
	}
	return n, nil
}

// KickedInTube marks kicked the n buried records of tube that beanstalkd's
// kick-tube takes (it kicks the longest buried first: the oldest
// failed_at), and returns how many it marked. kick-tube answers only a
// count, so the records are matched by that order. Finding them reads
// the whole collection on FerretDB (as many records as failing jobs);
// marking them is by key.
func (f *Failures) KickedInTube(ctx context.Context, at time.Time, tube string, n int) (int, error) {
	return f.KickedBefore(ctx, time.Time{}, at, tube, n)
}

// kicked marks kicked, at time at, the buried records among ids that
// failed before before (any time when before is zero), and returns how
// many it marked. On MongoDB (and in an old numeric FerretDB collection)
// one UpdateMany does it. In FerretDB's keyed layout, where that filter
// reads the whole collection, each record is read by key and, when it
// qualifies, updated by key. The race it accepts: a job kicked, run and
// failed again between that read and that update has its new record
// marked kicked, and is listed as kicked until it completes or fails
// again (as with a worker clock ahead of the manager's: see the
// manager's recordKicked).
func (f *Failures) kicked(ctx context.Context, before, at time.Time, ids []uint64) (int, error) {
	b, err := f.layout(ctx)
	if err != nil {
		return 0, err
	}
	at = at.UTC().Truncate(time.Millisecond)
	update := bson.D{{Key: "$set", Value: bson.D{
		{Key: "state", Value: job.FailureKicked},
		{Key: "failed_at", Value: at},
	}}}
	if !isKeyed(b) {
		filter := bson.D{{Key: "state", Value: job.FailureBuried}}
		if !before.IsZero() {
			filter = append(filter, bson.E{Key: "failed_at", Value: bson.D{{Key: "$lt", Value: before}}})
		}
		filter = append(filter, bson.E{Key: "_id", Value: bson.D{{Key: "$in", Value: inValues(b, ids)}}})
		res, err := f.coll.UpdateMany(ctx, filter, update)
		if err != nil {
			return 0, wrap("mark failure records kicked", err)
		}
		return int(res.ModifiedCount), nil
	}
	marked := 0
	for _, id := range ids {
		byKey := bson.D{{Key: "_id", Value: b.key(id)}}
		var r job.Failure
		err := f.coll.FindOne(ctx, byKey).Decode(&r)
		if errors.Is(err, mongo.ErrNoDocuments) {
			continue
		}
		if err != nil {
			return marked, wrap(fmt.Sprintf("read failure record of job %d", id), err)
		}
		if r.State != job.FailureBuried || (!before.IsZero() && !r.FailedAt.Before(before)) {
			continue
		}
		res, err := f.coll.UpdateOne(ctx, byKey, update)
		if err != nil {
			return marked, wrap(fmt.Sprintf("mark failure record of job %d kicked", id), err)
		}
		marked += int(res.ModifiedCount)
	}
	return marked, nil
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
// the last. The cursor names the last record's time and job id, on
// either server; FerretDB's keys (zero-padded digits) sort as the ids
// do. On FerretDB a page reads the whole collection: a record per
// failing job.
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
		b, err := f.layout(ctx)
		if err != nil {
			return nil, "", fmt.Errorf("list failure records: %w", err)
		}
		filter = append(filter, bson.E{Key: "$or", Value: bson.A{
			bson.D{{Key: "failed_at", Value: bson.D{{Key: "$lt", Value: at}}}},
			bson.D{{Key: "failed_at", Value: at}, {Key: "_id", Value: bson.D{{Key: "$lt", Value: b.key(id)}}}},
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

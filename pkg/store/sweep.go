package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Sweeps: deleting expired documents where the server has no TTL index
// (FerretDB), from a loop in every process, without letting a slow
// store turn that loop into a load of its own.
//
// A DeleteMany by a time field cannot be stopped on FerretDB: its delete
// ignores maxTimeMS and reads the whole collection (and devmongo's front
// reads the matched documents again, before and after, holding its write
// lock). DeleteBefore instead finds a batch of expired ids with a find
// command, which carries the caller's deadline as maxTimeMS and which
// FerretDB stops at that deadline, then deletes the batch by _id.
// DeleteFirstBefore reads from the start of the record order with no
// filter, which costs FerretDB a batch instead of the collection when
// the documents expire in the order they were inserted. And a Lease
// makes one process of several do a shared sweep each period.

// SweepBatch is how many expired documents DeleteBefore finds and
// deletes per round trip.
const SweepBatch = 1000

// DeleteBefore deletes the documents of coll whose field is before cut,
// batch by batch, until none is left or ctx ends, and returns how many
// it deleted. Each batch's ids come from one find command (the server
// stops it at ctx's deadline) and are deleted by one delete command of a
// statement per id, each exactly {_id: id}: a lookup by index on
// devmongo when the ids are strings. The find still reads the whole
// collection on FerretDB when fewer than a batch have expired.
func DeleteBefore(ctx context.Context, coll *mongo.Collection, field string, cut time.Time) (int64, error) {
	filter := bson.D{{Key: field, Value: bson.D{{Key: "$lt", Value: cut.UTC().Truncate(time.Millisecond)}}}}
	var deleted int64
	for {
		found, err := findBatch(ctx, coll, filter, field)
		if err != nil {
			return deleted, err
		}
		ids := make([]bson.RawValue, len(found))
		for i, d := range found {
			ids[i] = d.Lookup("_id")
		}
		n, err := deleteIDs(ctx, coll, ids)
		deleted += n
		if err != nil || len(found) < SweepBatch {
			return deleted, err
		}
	}
}

// DeleteFirstBefore deletes the documents at the start of coll's record
// order whose field is before cut, a batch at a time, and stops after
// the first batch that holds one that is not (or when ctx ends); it
// returns how many it deleted. On FerretDB the record order is the
// order of insertion, and reading a batch from its start, with no
// filter, reads that batch only: where documents are inserted with the
// time they expire by (the Idempotency-Key records), a sweep that finds
// nothing to delete costs one batch instead of the whole collection.
// What it misses (an expired document behind one rewritten with a new
// time) is DeleteBefore's to delete, less often. MongoDB's record order
// is no such thing: it has TTL indexes.
func DeleteFirstBefore(ctx context.Context, coll *mongo.Collection, field string, cut time.Time) (int64, error) {
	var deleted int64
	for {
		found, err := findBatch(ctx, coll, bson.D{}, field)
		if err != nil {
			return deleted, err
		}
		var ids []bson.RawValue
		for _, d := range found {
			if t, ok := d.Lookup(field).TimeOK(); ok && t.Before(cut) {
				ids = append(ids, d.Lookup("_id"))
			}
		}
		n, err := deleteIDs(ctx, coll, ids)
		deleted += n
		if err != nil || len(ids) < SweepBatch {
			return deleted, err
		}
	}
}

// findBatch returns the _id and field of up to SweepBatch documents that
// filter selects, in record order, with one find command: the driver
// sends ctx's deadline with it as maxTimeMS, which FerretDB stops at.
func findBatch(ctx context.Context, coll *mongo.Collection, filter bson.D, field string) ([]bson.Raw, error) {
	cmd := bson.D{
		{Key: "find", Value: coll.Name()},
		{Key: "filter", Value: filter},
		{Key: "projection", Value: bson.D{{Key: "_id", Value: 1}, {Key: field, Value: 1}}},
		{Key: "limit", Value: SweepBatch}, {Key: "batchSize", Value: SweepBatch}, {Key: "singleBatch", Value: true},
	}
	var reply struct {
		Cursor struct {
			FirstBatch []bson.Raw `bson:"firstBatch"`
		} `bson:"cursor"`
	}
	if err := coll.Database().RunCommand(ctx, cmd).Decode(&reply); err != nil {
		return nil, wrap(fmt.Sprintf("find expired documents of %s", coll.Name()), err)
	}
	return reply.Cursor.FirstBatch, nil
}

// deleteIDs deletes the documents with these _ids, in one delete command
// of a statement per id.
func deleteIDs(ctx context.Context, coll *mongo.Collection, ids []bson.RawValue) (int64, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	models := make([]mongo.WriteModel, len(ids))
	for i, id := range ids {
		models[i] = mongo.NewDeleteOneModel().SetFilter(bson.D{{Key: "_id", Value: id}})
	}
	res, err := coll.BulkWrite(ctx, models, options.BulkWrite().SetOrdered(false))
	var n int64
	if res != nil {
		n = res.DeletedCount
	}
	if err != nil {
		return n, wrap(fmt.Sprintf("delete %d expired documents of %s", len(ids), coll.Name()), err)
	}
	return n, nil
}

// Lease is a turn at a chore that processes share, such as a sweep: who
// runs it each period, and when it is due after a run timed out. It
// lives in a small collection of its own, read and written by string
// _ids only (lookups by index on devmongo): a document per period, whose
// insert only one process wins (the _id is unique), and one that says
// until when the chore is held back. A timed-out chore pushes the next
// back for every process: a slow store gets one try per back-off, not
// one per process per period.
type Lease struct {
	coll   *mongo.Collection
	name   string
	holder string
}

// NewLease returns the lease named name in coll; holder names this
// process in it.
func NewLease(coll *mongo.Collection, name, holder string) *Lease {
	return &Lease{coll: coll, name: name, holder: holder}
}

// leaseState is the lease's back-off, stored under its name.
type leaseState struct {
	Until    time.Time `bson:"until"`
	Timeouts int       `bson:"timeouts"` // chores in a row that timed out
}

// leaseTimeout bounds the reads and writes of a lease.
const leaseTimeout = 10 * time.Second

// Run runs chore with a deadline of timeout when this process takes the
// lease's turn for the current period (time since the epoch divided by
// every: processes whose clocks differ near a period's end may both
// take theirs), unless the lease is held back, and reports whether it
// ran. A chore that times out holds the lease back for 2, 4, 8, then 16
// periods; one that succeeds clears that.
func (l *Lease) Run(ctx context.Context, every, timeout time.Duration, chore func(context.Context) error) (bool, error) {
	lctx, cancel := context.WithTimeout(ctx, leaseTimeout)
	state, took, err := l.take(lctx, every)
	cancel()
	if err != nil || !took {
		return false, err
	}
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err = chore(tctx)
	switch {
	case err != nil && isTimeout(err):
		n := state.Timeouts + 1
		back := every << min(n, 4)
		if herr := l.hold(ctx, leaseState{Until: time.Now().Add(back), Timeouts: n}); herr != nil {
			return true, errors.Join(err, herr)
		}
		return true, fmt.Errorf("%w (%d in a row; next try in %s)", err, n, back)
	case err != nil:
		return true, err
	case state.Timeouts > 0:
		return true, l.hold(ctx, leaseState{})
	}
	return true, nil
}

// take takes this period's turn unless the lease is held back.
func (l *Lease) take(ctx context.Context, every time.Duration) (leaseState, bool, error) {
	var state leaseState
	err := l.coll.FindOne(ctx, bson.D{{Key: "_id", Value: l.name}}).Decode(&state)
	switch {
	case errors.Is(err, mongo.ErrNoDocuments):
	case err != nil:
		return state, false, wrap("read lease "+l.name, err)
	case time.Now().Before(state.Until):
		return state, false, nil
	}
	now := time.Now()
	turn := fmt.Sprintf("%s %020d", l.name, now.UnixMilli()/max(every.Milliseconds(), 1))
	_, err = l.coll.InsertOne(ctx, bson.D{{Key: "_id", Value: turn}, {Key: "holder", Value: l.holder}, {Key: "at", Value: now}})
	if mongo.IsDuplicateKeyError(err) {
		return state, false, nil // another process's turn
	}
	if err != nil {
		return state, false, wrap("take lease "+l.name, err)
	}
	// The turns before are spent: a few documents at most, or one left
	// by a delete that failed, which the next turn's deletes.
	_, _ = l.coll.DeleteMany(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$gt", Value: l.name + " "}, {Key: "$lt", Value: turn}}}})
	return state, true, nil
}

// hold writes the lease's back-off.
func (l *Lease) hold(ctx context.Context, state leaseState) error {
	ctx, cancel := context.WithTimeout(ctx, leaseTimeout)
	defer cancel()
	_, err := l.coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: l.name}}, bson.D{{Key: "$set", Value: bson.D{
		{Key: "until", Value: state.Until.UTC().Truncate(time.Millisecond)}, {Key: "timeouts", Value: state.Timeouts},
	}}}, options.UpdateOne().SetUpsert(true))
	if err != nil {
		return wrap("hold lease "+l.name, err)
	}
	return nil
}

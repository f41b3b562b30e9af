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
// FerretDB stops at that deadline, then deletes the batch by _id. And a
// Lease makes one process of several do a shared sweep each period.

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
	var deleted int64
	for {
		cmd := bson.D{
			{Key: "find", Value: coll.Name()},
			{Key: "filter", Value: bson.D{{Key: field, Value: bson.D{{Key: "$lt", Value: cut.UTC().Truncate(time.Millisecond)}}}}},
			{Key: "projection", Value: bson.D{{Key: "_id", Value: 1}}},
			{Key: "limit", Value: SweepBatch}, {Key: "batchSize", Value: SweepBatch}, {Key: "singleBatch", Value: true},
		}
		var reply struct {
			Cursor struct {
				FirstBatch []struct {
					ID bson.RawValue `bson:"_id"`
				} `bson:"firstBatch"`
			} `bson:"cursor"`
		}
		if err := coll.Database().RunCommand(ctx, cmd).Decode(&reply); err != nil {
			return deleted, wrap(fmt.Sprintf("find expired documents of %s", coll.Name()), err)
		}
		found := reply.Cursor.FirstBatch
		if len(found) == 0 {
			return deleted, nil
		}
		models := make([]mongo.WriteModel, len(found))
		for i, d := range found {
			models[i] = mongo.NewDeleteOneModel().SetFilter(bson.D{{Key: "_id", Value: d.ID}})
		}
		res, err := coll.BulkWrite(ctx, models, options.BulkWrite().SetOrdered(false))
		if res != nil {
			deleted += res.DeletedCount
		}
		if err != nil {
			return deleted, wrap(fmt.Sprintf("delete %d expired documents of %s", len(found), coll.Name()), err)
		}
		if len(found) < SweepBatch {
			return deleted, nil
		}
	}
}

// Lease is a turn at a chore that processes share, such as a sweep: one
// document with a string _id in a small collection of its own, read and
// written by that _id only (a lookup by index on devmongo). It holds
// until when the chore is next due, which a timed-out chore pushes back
// for every process: a slow store gets one try per back-off, not one per
// process per period.
type Lease struct {
	coll   *mongo.Collection
	name   string
	holder string
}

// NewLease returns the lease named name in coll; holder names this
// process in it (unique per process).
func NewLease(coll *mongo.Collection, name, holder string) *Lease {
	return &Lease{coll: coll, name: name, holder: holder}
}

// leaseDoc is a lease as stored.
type leaseDoc struct {
	Name     string    `bson:"_id"`
	Until    time.Time `bson:"until"`
	Holder   string    `bson:"holder"`
	Timeouts int       `bson:"timeouts"` // of the chore, in a row
}

// leaseTimeout bounds the reads and writes of a lease.
const leaseTimeout = 10 * time.Second

// Run runs chore with a deadline of timeout when this process takes the
// lease (it is due: no process has it until later), and reports whether
// it ran. Taking it holds it for every; a chore that times out holds it
// for a back-off that doubles with each timeout in a row. Two processes
// that read the lease as due within the same round trip may both run the
// chore: a lease only saves work, it guards no data.
func (l *Lease) Run(ctx context.Context, every, timeout time.Duration, chore func(context.Context) error) (bool, error) {
	lctx, cancel := context.WithTimeout(ctx, leaseTimeout)
	doc, took, err := l.take(lctx, every)
	cancel()
	if err != nil || !took {
		return false, err
	}
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err = chore(tctx)
	switch {
	case err != nil && isTimeout(err):
		n := doc.Timeouts + 1
		back := every << min(n, 4) // 2, 4, 8, then 16 periods
		if herr := l.hold(ctx, time.Now().Add(back), n); herr != nil {
			return true, errors.Join(err, herr)
		}
		return true, fmt.Errorf("%w (%d in a row; next try in %s)", err, n, back)
	case err != nil:
		return true, err
	case doc.Timeouts > 0:
		return true, l.hold(ctx, doc.Until, 0)
	}
	return true, nil
}

// take takes the lease for every when it is due: it writes itself in
// and reads the lease back, and has it when it reads itself.
func (l *Lease) take(ctx context.Context, every time.Duration) (leaseDoc, bool, error) {
	byName := bson.D{{Key: "_id", Value: l.name}}
	var d leaseDoc
	err := l.coll.FindOne(ctx, byName).Decode(&d)
	switch {
	case errors.Is(err, mongo.ErrNoDocuments):
	case err != nil:
		return d, false, wrap("read lease "+l.name, err)
	case time.Now().Before(d.Until):
		return d, false, nil
	}
	d.Until = time.Now().Add(every).UTC().Truncate(time.Millisecond)
	_, err = l.coll.UpdateOne(ctx, byName, bson.D{{Key: "$set", Value: bson.D{
		{Key: "until", Value: d.Until}, {Key: "holder", Value: l.holder},
	}}}, options.UpdateOne().SetUpsert(true))
	if mongo.IsDuplicateKeyError(err) {
		return d, false, nil // another process made it first
	}
	if err != nil {
		return d, false, wrap("take lease "+l.name, err)
	}
	var back leaseDoc
	if err := l.coll.FindOne(ctx, byName).Decode(&back); err != nil {
		return d, false, wrap("read lease "+l.name, err)
	}
	return back, back.Holder == l.holder, nil
}

// hold keeps the lease until until, with n timeouts in a row.
func (l *Lease) hold(ctx context.Context, until time.Time, n int) error {
	ctx, cancel := context.WithTimeout(ctx, leaseTimeout)
	defer cancel()
	_, err := l.coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: l.name}}, bson.D{{Key: "$set", Value: bson.D{
		{Key: "until", Value: until.UTC().Truncate(time.Millisecond)}, {Key: "holder", Value: l.holder}, {Key: "timeouts", Value: n},
	}}})
	if err != nil {
		return wrap("hold lease "+l.name, err)
	}
	return nil
}

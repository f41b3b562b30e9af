package store

import (
	"context"
	"errors"
	"fmt"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/jobsys/jobs/pkg/job"
)

// The largest stored id on FerretDB, which sorts in memory after reading
// the whole collection (24 s at 100,000 results), comes from a bound
// kept beside the results instead: one document, {_id: "max_id", v},
// in the collection <results>_max_id, whose v is above every id the
// store has saved or imported. Before a save of an id at or above the
// bound this process last saw, the store raises v to the id rounded up
// to the next multiple of boundStep, with $max: one extra write per
// boundStep ids, not per result. MaxID then looks the ids just below v
// up by index, one by one, largest first; the first found is the
// largest stored, since none is stored at or above v. When the bound is
// missing (results not written by this store) or the two steps below it
// hold none (saves that failed after raising it), MaxID reads the whole
// collection as before.
const (
	boundStep = 128
	boundID   = "max_id"
)

// boundColl is the collection the bound is kept in.
func (s *Results) boundColl() *mongo.Collection {
	return s.coll.Database().Collection(s.coll.Name() + "_max_id")
}

// keepsBound reports whether b keeps the id bound: FerretDB's keyed
// layout does; MongoDB reads the largest id from its _id index.
func keepsBound(b backend) bool {
	fb, ok := b.(ferretBackend)
	return ok && !fb.numericIDs
}

// raiseBound makes the bound cover id before a result with id is
// written.
func (s *Results) raiseBound(ctx context.Context, b backend, id uint64) error {
	if !keepsBound(b) || id < s.bound.Load() {
		return nil
	}
	want := (id/boundStep + 1) * boundStep
	var doc struct {
		V int64 `bson:"v"`
	}
	err := s.boundColl().FindOneAndUpdate(ctx, bson.D{{Key: "_id", Value: boundID}},
		bson.D{{Key: "$max", Value: bson.D{{Key: "v", Value: int64(want)}}}},
		options.FindOneAndUpdate().SetUpsert(true).SetReturnDocument(options.After)).Decode(&doc)
	if err != nil {
		return wrap(fmt.Sprintf("raise the id bound to %d", want), err)
	}
	for {
		cur := s.bound.Load()
		if uint64(doc.V) <= cur || s.bound.CompareAndSwap(cur, uint64(doc.V)) {
			return nil
		}
	}
}

// maxIDByBound returns the largest stored id found below the bound; ok
// is false when the bound cannot tell.
func (s *Results) maxIDByBound(ctx context.Context, b backend) (id uint64, ok bool, err error) {
	var doc struct {
		V int64 `bson:"v"`
	}
	err = s.boundColl().FindOne(ctx, bson.D{{Key: "_id", Value: boundID}}).Decode(&doc)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	top := uint64(doc.V)
	lo := uint64(0)
	if top > 2*boundStep {
		lo = top - 2*boundStep
	}
	// Largest first, probeChunk at a time (looked up concurrently).
	for hi := top; hi > lo; {
		var ids []uint64
		for ; hi > lo && len(ids) < probeChunk; hi-- {
			ids = append(ids, hi-1)
		}
		cur, err := b.findMany(ctx, s.coll, ids)
		if err != nil {
			return 0, false, err
		}
		var found []job.Result
		if err := cur.All(ctx, &found); err != nil {
			return 0, false, err
		}
		for _, r := range found {
			id = max(id, r.ID)
		}
		if len(found) > 0 {
			return id, true, nil
		}
	}
	return 0, false, nil
}

// probeChunk is how many ids below the bound MaxID looks up at once.
const probeChunk = 16

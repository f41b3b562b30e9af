package store

import (
	"context"
	"errors"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/jobsys/jobs/pkg/job"
)

// Last returns the latest result in stored order (stored_at, then _id), or ErrNotFound when there is none. A feed that starts reading new
// completions starts after it.
func (s *Results) Last(ctx context.Context) (job.Result, error) {
	var r job.Result
	opts := options.FindOne().SetSort(bson.D{{Key: "stored_at", Value: -1}, {Key: "_id", Value: -1}})
	err := s.gates.read(ctx, readLast, func(ctx context.Context) error {
		j, b, err := s.ordered(ctx)
		if err != nil {
			return err
		}
		if j == nil {
			return s.coll.FindOne(ctx, bson.D{}, opts).Decode(&r)
		}
		rs, err := j.newest(ctx, s.lookup(b, true), 1, time.Time{}, 0)
		if err == nil && len(rs) == 0 {
			err = mongo.ErrNoDocuments
		}
		if err == nil {
			r = rs[0]
		}
		return err
	})
	if errors.Is(err, mongo.ErrNoDocuments) {
		return r, ErrNotFound
	}
	if err != nil {
		return r, wrap("find latest result", err)
	}
	return r, nil
}

// CountBetween returns how many results were stored in [from, to). A
// feed that polls by stored time compares it with what it has read, to
// find results whose write became visible long after its stamp.
func (s *Results) CountBetween(ctx context.Context, from, to time.Time) (int64, error) {
	var n int64
	err := s.gates.read(ctx, readCount, func(ctx context.Context) error {
		j, b, err := s.ordered(ctx)
		if err != nil {
			return err
		}
		if j != nil {
			n, err = j.count(ctx, s.lookup(b, true), from, to)
			return err
		}
		n, err = s.coll.CountDocuments(ctx, bson.D{{Key: "stored_at", Value: bson.D{{Key: "$gte", Value: from}, {Key: "$lt", Value: to}}}})
		return err
	})
	if err != nil {
		return 0, wrap("count results by stored time", err)
	}
	return n, nil
}

// QuickCount returns how many results there are, when the server can tell
// without reading them; ok is false when it cannot. A feed that polls
// skips a round whose count has not moved. FerretDB can (its $collStats
// count comes from SQLite's page statistics); MongoDB answers ok false.
func (s *Results) QuickCount(ctx context.Context) (n int64, ok bool, err error) {
	b, err := s.backend(ctx)
	if err != nil {
		return 0, false, err
	}
	return b.quickCount(ctx, s.coll)
}

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

// Last returns the latest result in stored order (stored_at, then _id), or ErrNotFound when there is none. A feed that starts reading new
// completions starts after it.
func (s *Results) Last(ctx context.Context) (job.Result, error) {
	var r job.Result
	opts := options.FindOne().SetSort(bson.D{{Key: "stored_at", Value: -1}, {Key: "_id", Value: -1}})
	err := s.coll.FindOne(ctx, bson.D{}, opts).Decode(&r)
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
	n, err := s.coll.CountDocuments(ctx, bson.D{{Key: "stored_at", Value: bson.D{{Key: "$gte", Value: from}, {Key: "$lt", Value: to}}}})
	if err != nil {
		return 0, wrap("count results by stored time", err)
	}
	return n, nil
}

// QuickCount returns how many results there are, when the server can tell
// without reading them; ok is false when it cannot. A feed that polls
// skips a round whose count has not moved.
//
// FerretDB answers a $collStats count from SQLite's page statistics: 37 ms
// at 20,000 results on this project's machine, where one poll query reads
// and decodes them all in 1.3 s. On MongoDB ok is false: a poll reads the
// (stored_at, _id) index there and costs what is new, and the statistics
// can be off after an unclean shutdown.
func (s *Results) QuickCount(ctx context.Context) (n int64, ok bool, err error) {
	mode, err := s.stampMode(ctx)
	if err != nil || mode != stampClient {
		return 0, false, err
	}
	pipeline := mongo.Pipeline{{{Key: "$collStats", Value: bson.D{{Key: "count", Value: bson.D{}}}}}}
	cur, err := s.coll.Aggregate(ctx, pipeline)
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

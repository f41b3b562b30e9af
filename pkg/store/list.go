package store

import (
	"context"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/jobsys/jobs/pkg/job"
)

// Before returns up to limit results stored before (at, id) in stored
// order, newest first: the manager's completed list, page by page. A zero
// at starts at the newest; tube, when set, keeps that tube's only.
func (s *Results) Before(ctx context.Context, tube string, at time.Time, id uint64, limit int) ([]job.Result, error) {
	filter := bson.D{}
	if tube != "" {
		filter = append(filter, bson.E{Key: "tube", Value: tube})
	}
	if !at.IsZero() {
		filter = append(filter, bson.E{Key: "$or", Value: bson.A{
			bson.D{{Key: "stored_at", Value: bson.D{{Key: "$lt", Value: at}}}},
			bson.D{{Key: "stored_at", Value: at}, {Key: "_id", Value: bson.D{{Key: "$lt", Value: int64(id)}}}},
		}})
	}
	opts := options.Find().SetSort(bson.D{{Key: "stored_at", Value: -1}, {Key: "_id", Value: -1}})
	if limit > 0 {
		opts.SetLimit(int64(limit))
	}
	cur, err := s.coll.Find(ctx, filter, opts)
	if err != nil {
		return nil, wrap("find results before cursor", err)
	}
	out := []job.Result{}
	if err := cur.All(ctx, &out); err != nil {
		return nil, wrap("read results before cursor", err)
	}
	return out, nil
}

// Total returns how many results are stored, from the collection's
// statistics where the server keeps them cheaply (FerretDB's $collStats,
// MongoDB's estimatedDocumentCount): the board's all-time count.
func (s *Results) Total(ctx context.Context) (int64, error) {
	n, ok, err := s.QuickCount(ctx)
	if err != nil {
		return 0, err
	}
	if ok {
		return n, nil
	}
	n, err = s.coll.EstimatedDocumentCount(ctx)
	if err != nil {
		return 0, wrap("count results", err)
	}
	return n, nil
}

package store

import (
	"context"
	"fmt"
	"slices"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/jobsys/jobs/pkg/job"
)

// Latest returns the n most recent results in stored order (stored_at,
// then _id), oldest first: the notifier's ?last=N replay. The query
// reads them newest first, so it stops after n on MongoDB's index.
func (s *Results) Latest(ctx context.Context, n int) ([]job.Result, error) {
	if n <= 0 {
		return nil, nil
	}
	opts := options.Find().SetSort(bson.D{{Key: "stored_at", Value: -1}, {Key: "_id", Value: -1}}).SetLimit(int64(n))
	var out []job.Result
	err := s.gates.read(ctx, readLatest, func(ctx context.Context) error {
		j, b, err := s.ordered(ctx)
		if err != nil {
			return err
		}
		if j != nil {
			out, err = j.newest(ctx, s.lookup(b, true), n, time.Time{}, 0)
			return err
		}
		if out, err = s.find(ctx, bson.D{}, opts); err == nil {
			slices.Reverse(out)
		}
		return err
	})
	if err != nil {
		return nil, wrap(fmt.Sprintf("find the %d latest results", n), err)
	}
	return out, nil
}

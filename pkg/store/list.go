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

// Before returns up to limit results stored before (at, id) in stored
// order, newest first: the manager's completed list, page by page. A zero
// at starts at the newest; tube, when set, keeps that tube's only.
func (s *Results) Before(ctx context.Context, tube string, at time.Time, id uint64, limit int) ([]job.Result, error) {
	if j, b, err := s.ordered(ctx); err != nil {
		return nil, fmt.Errorf("find results before cursor: %w", err)
	} else if j != nil && limit > 0 && tube == "" {
		// By the journal, newest first; one tube's results are read by
		// scanning, as a rare tube's would take a walk of the whole
		// journal to find.
		out, err := j.newest(ctx, s.lookup(b, true), limit, at, id)
		if err != nil {
			return nil, wrap("find results before cursor", err)
		}
		slices.Reverse(out)
		return append([]job.Result{}, out...), nil
	}
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

// KickedBefore marks kicked the buried records that a kick just moved:
// those of ids, or else the n longest buried of tube (the order
// beanstalkd's kick takes), that failed before the kick began (before;
// any time when zero). A job kicked and failed again at once has a new
// record by then, with a later failed_at: it stays buried. It returns
// how many it marked. Finding a tube's longest buried reads the whole
// collection on FerretDB (a record per failing job); marking them, and
// the records of ids, goes by key there (see kicked for the race that
// accepts).
func (f *Failures) KickedBefore(ctx context.Context, before, at time.Time, tube string, n int, ids ...uint64) (int, error) {
	if len(ids) == 0 {
		if n <= 0 {
			return 0, nil
		}
		filter := bson.D{{Key: "state", Value: job.FailureBuried}, {Key: "tube", Value: tube}}
		if !before.IsZero() {
			filter = append(filter, bson.E{Key: "failed_at", Value: bson.D{{Key: "$lt", Value: before}}})
		}
		opts := options.Find().SetSort(bson.D{{Key: "failed_at", Value: 1}, {Key: "_id", Value: 1}}).
			SetLimit(int64(n)).SetProjection(bson.D{{Key: "_id", Value: 1}})
		cur, err := f.coll.Find(ctx, filter, opts)
		if err != nil {
			return 0, wrap(fmt.Sprintf("find the kicked records of tube %q", tube), err)
		}
		var docs []job.Failure // _id only
		if err := cur.All(ctx, &docs); err != nil {
			return 0, wrap(fmt.Sprintf("read the kicked records of tube %q", tube), err)
		}
		if len(docs) == 0 {
			return 0, nil
		}
		for _, d := range docs {
			ids = append(ids, d.ID)
		}
	}
	n, err := f.kicked(ctx, before, at, ids)
	if err != nil {
		return 0, fmt.Errorf("mark %d failure records kicked: %w", len(ids), err)
	}
	return n, nil
}

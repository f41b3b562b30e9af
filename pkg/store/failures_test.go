package store_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/store"
)

// The failure records' cases join the contract, so they run on every
// (implementation, server) pair TestContract runs.
func init() {
	contract = append(contract, []struct {
		name string
		run  func(t *testing.T, b bundle)
	}{
		{"FailureRecordAndGet", testFailureRecord},
		{"FailureGetMissing", testFailureMissing},
		{"FailureRemove", testFailureRemove},
		{"FailureKicked", testFailureKicked},
		{"FailureListNewestFirst", testFailureList},
		{"FailureListPages", testFailurePages},
		{"FailureListLimits", testFailureListLimits},
		{"FailureIndexes", testFailureIndexes},
		{"RetentionDeletesExpired", testDeleteExpired},
		{"RetentionMaintain", testMaintain},
	}...)
}

// failures returns the bundle's failure records, indexed as services make
// them.
func (b bundle) failures(t *testing.T) *store.Failures {
	t.Helper()
	f := b.s.Failures()
	require.NoError(t, f.EnsureIndexes(b.ctx))
	return f
}

func failure(id uint64, tube string, state job.FailureState, at time.Time) job.Failure {
	return job.Failure{ID: id, Tube: tube, State: state, Payload: `{"n":1}`, Error: "exit status 3: disk on fire",
		Attempts: 1, Worker: "w1", FailedAt: at}
}

func (b bundle) record(t *testing.T, f *store.Failures, rs ...job.Failure) {
	t.Helper()
	for _, r := range rs {
		require.NoError(t, f.Record(b.ctx, r))
	}
}

// A record is stored as given (its time to the millisecond, in UTC), in
// the collection named after the results', and a later attempt's record
// replaces it.
func testFailureRecord(t *testing.T, b bundle) {
	f := b.failures(t)
	require.Equal(t, b.s.Collection().Name()+"_failures", f.Collection().Name())
	at := time.Date(2026, 1, 2, 3, 4, 5, 678_901_234, time.FixedZone("x", 3600))
	first := failure(7, "shout", job.FailureRetrying, at)
	b.record(t, f, first)
	got, err := f.Get(b.ctx, 7)
	require.NoError(t, err)
	first.FailedAt = at.UTC().Truncate(time.Millisecond)
	require.Equal(t, first, got)

	second := failure(7, "shout", job.FailureBuried, at.Add(time.Second))
	second.Attempts, second.Error, second.Worker = 2, "exit status 1", "w2"
	b.record(t, f, second)
	got, err = f.Get(b.ctx, 7)
	require.NoError(t, err)
	second.FailedAt = second.FailedAt.UTC().Truncate(time.Millisecond)
	require.Equal(t, second, got)
	n, err := f.Collection().CountDocuments(b.ctx, bson.D{})
	require.NoError(t, err)
	require.EqualValues(t, 1, n, "one record per job id")

	late := failure(7, "shout", job.FailureRetrying, at)
	b.record(t, f, late)
	got, err = f.Get(b.ctx, 7)
	require.NoError(t, err)
	require.Equal(t, second, got, "an earlier attempt's record, written late, does not replace a later one")

	require.Error(t, f.Record(b.ctx, failure(8, "t", "exploded", at)), "an unknown state is refused")
}

func testFailureMissing(t *testing.T, b bundle) {
	f := b.failures(t)
	_, err := f.Get(b.ctx, 99)
	require.ErrorIs(t, err, store.ErrNoFailure)
}

// Remove deletes one job's record, and a missing record is no error.
func testFailureRemove(t *testing.T, b bundle) {
	f := b.failures(t)
	b.record(t, f, failure(1, "t", job.FailureBuried, base), failure(2, "t", job.FailureRetrying, base))
	require.NoError(t, f.Remove(b.ctx, 1))
	require.NoError(t, f.Remove(b.ctx, 1))
	require.NoError(t, f.Remove(b.ctx, 3))
	_, err := f.Get(b.ctx, 1)
	require.ErrorIs(t, err, store.ErrNoFailure)
	_, err = f.Get(b.ctx, 2)
	require.NoError(t, err)
}

// Kicked marks only buried records; KickedInTube marks the tube's
// longest-buried records first, as beanstalkd's kick-tube kicks.
func testFailureKicked(t *testing.T, b bundle) {
	f := b.failures(t)
	b.record(t, f,
		failure(1, "a", job.FailureBuried, base.Add(3*time.Second)),
		failure(2, "a", job.FailureBuried, base.Add(1*time.Second)),
		failure(3, "a", job.FailureBuried, base.Add(2*time.Second)),
		failure(4, "b", job.FailureBuried, base),
		failure(5, "a", job.FailureRetrying, base),
	)
	kick := base.Add(time.Hour)
	n, err := f.Kicked(b.ctx, kick, 5, 6)
	require.NoError(t, err)
	require.Zero(t, n, "a retrying record and a missing one are not kicked")

	n, err = f.KickedInTube(b.ctx, kick, "a", 2)
	require.NoError(t, err)
	require.Equal(t, 2, n)
	state := func(id uint64) job.FailureState {
		r, err := f.Get(b.ctx, id)
		require.NoError(t, err)
		return r.State
	}
	require.Equal(t, job.FailureKicked, state(2))
	require.Equal(t, job.FailureKicked, state(3))
	require.Equal(t, job.FailureBuried, state(1))
	require.Equal(t, job.FailureBuried, state(4), "another tube is untouched")
	require.Equal(t, job.FailureRetrying, state(5))
	r, err := f.Get(b.ctx, 2)
	require.NoError(t, err)
	require.Equal(t, kick, r.FailedAt, "a kick moves the record's time")

	n, err = f.Kicked(b.ctx, kick, 1, 2, 4)
	require.NoError(t, err)
	require.Equal(t, 2, n)
	require.Equal(t, job.FailureKicked, state(4))
}

func failureIDs(rs []job.Failure) []uint64 {
	out := []uint64{}
	for _, r := range rs {
		out = append(out, r.ID)
	}
	return out
}

// List keeps one state (and tube), newest first, ties by id descending.
func testFailureList(t *testing.T, b bundle) {
	f := b.failures(t)
	b.record(t, f,
		failure(1, "a", job.FailureBuried, base),
		failure(2, "b", job.FailureBuried, base.Add(time.Second)),
		failure(3, "a", job.FailureBuried, base.Add(2*time.Second)),
		failure(4, "a", job.FailureBuried, base.Add(2*time.Second)),
		failure(5, "a", job.FailureRetrying, base.Add(3*time.Second)),
		failure(6, "a", job.FailureKicked, base.Add(4*time.Second)),
	)
	for _, c := range []struct {
		state job.FailureState
		tube  string
		want  []uint64
	}{
		{job.FailureBuried, "", []uint64{4, 3, 2, 1}},
		{job.FailureBuried, "a", []uint64{4, 3, 1}},
		{job.FailureBuried, "b", []uint64{2}},
		{job.FailureBuried, "none", []uint64{}},
		{job.FailureRetrying, "", []uint64{5}},
		{job.FailureKicked, "a", []uint64{6}},
	} {
		got, next, err := f.List(b.ctx, store.FailureQuery{State: c.state, Tube: c.tube, Limit: 10})
		require.NoError(t, err)
		require.Equal(t, c.want, failureIDs(got), "%s in tube %q", c.state, c.tube)
		require.Empty(t, next, "one page holds them all")
	}
	got, _, err := f.List(b.ctx, store.FailureQuery{State: job.FailureBuried, Tube: "b", Limit: 1})
	require.NoError(t, err)
	want := failure(2, "b", job.FailureBuried, base.Add(time.Second))
	require.Equal(t, []job.Failure{want}, got, "the records come whole")
}

// Pages follow each other by cursor without a gap or a repeat, across
// records that failed in the same millisecond, and the last page has no
// next cursor.
func testFailurePages(t *testing.T, b bundle) {
	f := b.failures(t)
	var all []job.Failure
	for i := range 7 {
		all = append(all, failure(uint64(i+1), "a", job.FailureBuried, base.Add(time.Duration(i/2)*time.Second)))
	}
	b.record(t, f, all...)
	var seen []uint64
	var after job.Cursor
	pages := 0
	for {
		page, next, err := f.List(b.ctx, store.FailureQuery{State: job.FailureBuried, Tube: "a", Limit: 3, After: after})
		require.NoError(t, err)
		pages++
		seen = append(seen, failureIDs(page)...)
		if next == "" {
			break
		}
		require.Len(t, page, 3)
		after = next
		require.Less(t, pages, 5, "the pages end")
	}
	require.Equal(t, []uint64{7, 6, 5, 4, 3, 2, 1}, seen)
	require.Equal(t, 3, pages)

	// An exactly full last page says there is no next one.
	page, next, err := f.List(b.ctx, store.FailureQuery{State: job.FailureBuried, Limit: 7})
	require.NoError(t, err)
	require.Len(t, page, 7)
	require.Empty(t, next)
}

// A list request past its limits is refused, never read.
func testFailureListLimits(t *testing.T, b bundle) {
	f := b.failures(t)
	for _, q := range []store.FailureQuery{
		{State: job.FailureBuried, Limit: 0},
		{State: job.FailureBuried, Limit: -1},
		{State: job.FailureBuried, Limit: store.MaxFailureList + 1},
		{State: "completed", Limit: 10},
		{State: job.FailureBuried, Limit: 10, After: "yesterday"},
	} {
		_, _, err := f.List(b.ctx, q)
		require.ErrorIs(t, err, store.ErrBadList, "%+v", q)
	}
	_, _, err := f.List(b.ctx, store.FailureQuery{State: job.FailureBuried, Limit: store.MaxFailureList})
	require.NoError(t, err)
}

// EnsureIndexes can run again; MongoDB's implementation makes the lists'
// indexes, FerretDB's none.
func testFailureIndexes(t *testing.T, b bundle) {
	f := b.failures(t)
	b.record(t, f, failure(1, "a", job.FailureBuried, base))
	require.NoError(t, f.EnsureIndexes(b.ctx))
	specs, err := f.Collection().Indexes().ListSpecifications(b.ctx)
	require.NoError(t, err)
	names := map[string]bool{}
	for _, s := range specs {
		names[s.Name] = true
	}
	if b.impl == store.MongoDB {
		require.True(t, names["state_failed_at_id"], "indexes: %v", names)
		require.True(t, names["state_tube_failed_at_id"], "indexes: %v", names)
	} else {
		require.Len(t, names, 1, "only _id's index: %v", names)
	}
}

// insertAged writes a result and a failure record for id as if stored
// and failed at at.
func (b bundle) insertAged(t *testing.T, f *store.Failures, id uint64, at time.Time) {
	t.Helper()
	r := result(id, `{"aged":1}`, at)
	r.StoredAt = at
	_, err := b.s.Collection().InsertOne(b.ctx, r)
	require.NoError(t, err)
	b.record(t, f, failure(id, "a", job.FailureBuried, at))
}

func (b bundle) idsLeft(t *testing.T) (results, failures []uint64) {
	t.Helper()
	for _, c := range []struct {
		coll interface {
			Find(context.Context, any, ...options.Lister[options.FindOptions]) (*mongo.Cursor, error)
		}
		out *[]uint64
	}{{b.s.Collection(), &results}, {b.s.Failures().Collection(), &failures}} {
		cur, err := c.coll.Find(b.ctx, bson.D{}, options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}))
		require.NoError(t, err)
		var docs []job.Failure // decodes either layout's _id; results here are numeric
		require.NoError(t, cur.All(b.ctx, &docs))
		*c.out = []uint64{}
		for _, d := range docs {
			*c.out = append(*c.out, d.ID)
		}
	}
	return results, failures
}

// DeleteExpired deletes results and failure records older than the TTL,
// and never a result without stored_at (the original system's).
func testDeleteExpired(t *testing.T, b bundle) {
	f := b.failures(t)
	now := time.Now().UTC().Truncate(time.Millisecond)
	b.insertAged(t, f, 1, now.Add(-2*time.Hour))
	b.insertAged(t, f, 2, now.Add(-30*time.Minute))
	_, err := b.s.Collection().InsertOne(b.ctx, bson.D{{Key: "_id", Value: int64(3)}, {Key: "hash", Value: "x"}, {Key: "payload", Value: "{}"}})
	require.NoError(t, err)

	require.NoError(t, b.s.DeleteExpired(b.ctx, now, 0), "no TTL deletes nothing")
	results, failures := b.idsLeft(t)
	require.Equal(t, []uint64{1, 2, 3}, results)
	require.Equal(t, []uint64{1, 2}, failures)

	require.NoError(t, b.s.DeleteExpired(b.ctx, now, time.Hour))
	results, failures = b.idsLeft(t)
	require.Equal(t, []uint64{2, 3}, results)
	require.Equal(t, []uint64{2}, failures)
}

// Maintain makes the failure records' indexes and applies RESULTS_TTL:
// TTL indexes on MongoDB (changed with the setting, dropped when it is
// off), and on FerretDB, which has none, a periodic delete of what has
// expired.
func testMaintain(t *testing.T, b bundle) {
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	server, err := store.NewResults(b.client, b.s.Collection().Database().Name(), "any").Server(b.ctx)
	require.NoError(t, err)
	if b.impl == store.MongoDB && server == store.MongoDB {
		ttls := func() map[string]int32 {
			out := map[string]int32{}
			for _, coll := range []*mongo.Collection{b.s.Collection(), b.s.Failures().Collection()} {
				specs, err := coll.Indexes().ListSpecifications(b.ctx)
				require.NoError(t, err)
				for _, s := range specs {
					if s.ExpireAfterSeconds != nil {
						out[s.Name] = *s.ExpireAfterSeconds
					}
				}
			}
			return out
		}
		for _, c := range []struct {
			ttl  time.Duration
			want map[string]int32
		}{
			{time.Hour, map[string]int32{"stored_at_ttl": 3600, "failed_at_ttl": 3600}},
			{time.Hour, map[string]int32{"stored_at_ttl": 3600, "failed_at_ttl": 3600}},
			{2 * time.Hour, map[string]int32{"stored_at_ttl": 7200, "failed_at_ttl": 7200}},
			{0, map[string]int32{}},
		} {
			require.NoError(t, b.s.Maintain(b.ctx, store.MaintainOptions{TTL: c.ttl, Try: 5 * time.Second, Log: log}), "returns once done")
			require.Equal(t, c.want, ttls(), "TTL %s", c.ttl)
		}
		return
	}

	f := b.failures(t)
	now := time.Now().UTC()
	b.insertAged(t, f, 1, now.Add(-2*time.Hour))
	ctx, cancel := context.WithCancel(b.ctx)
	done := make(chan error, 1)
	go func() {
		done <- b.s.Maintain(ctx, store.MaintainOptions{TTL: time.Hour, Every: 50 * time.Millisecond, Try: 5 * time.Second, Log: log})
	}()
	require.Eventually(t, func() bool {
		results, failures := b.idsLeft(t)
		return len(results) == 0 && len(failures) == 0
	}, 10*time.Second, 20*time.Millisecond, "the expired result and record are deleted")
	b.insertAged(t, f, 2, now.Add(-2*time.Hour))
	b.insertAged(t, f, 3, time.Now().UTC())
	require.Eventually(t, func() bool {
		results, failures := b.idsLeft(t)
		return len(results) == 1 && len(failures) == 1 && results[0] == 3 && failures[0] == 3
	}, 10*time.Second, 20*time.Millisecond, "again, every round; fresh ones stay")
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Retention (RESULTS_TTL): results expire ttl after stored_at, failure
// records ttl after failed_at. On MongoDB each collection has a TTL index
// (stored_at_ttl, failed_at_ttl) that the server expires by; on FerretDB,
// which has no TTL indexes (it answers NotImplemented), Maintain deletes
// what has expired every MaintainOptions.Every. A ttl of 0 keeps everything, as the original
// did, and drops TTL indexes left by an earlier setting. Results without
// stored_at (written by the original system) never expire.

// ttlIndex is one collection's TTL index.
type ttlIndex struct {
	coll  *mongo.Collection
	field string
	// sweep, when set, deletes the expired documents in its stead where
	// the server has no TTL index.
	sweep func(ctx context.Context, cut time.Time) (int64, error)
}

func (t ttlIndex) name() string { return t.field + "_ttl" }

func (s *Results) ttlIndexes() []ttlIndex {
	f := s.Failures()
	return []ttlIndex{{coll: s.coll, field: "stored_at"}, {coll: f.coll, field: "failed_at", sweep: s.expireFailures}}
}

// ensure makes the index match ttl: created, changed (dropped and made
// again: FerretDB has no collMod for indexes), or dropped for 0.
func (t ttlIndex) ensure(ctx context.Context, ttl time.Duration) error {
	have, err := indexSpecs(ctx, t.coll)
	if err != nil {
		return err
	}
	secs := int32(ttl / time.Second)
	if spec, ok := have[t.name()]; ok {
		if ttl > 0 && spec.ExpireAfterSeconds != nil && *spec.ExpireAfterSeconds == secs {
			return nil
		}
		if err := t.coll.Indexes().DropOne(ctx, t.name()); err != nil {
			return wrap("drop index "+t.name()+" of "+t.coll.Name(), err)
		}
	}
	if ttl <= 0 {
		return nil
	}
	m := mongo.IndexModel{Keys: bson.D{{Key: t.field, Value: 1}},
		Options: options.Index().SetName(t.name()).SetExpireAfterSeconds(secs)}
	if _, err := t.coll.Indexes().CreateOne(ctx, m); err != nil {
		return wrap("create index "+t.name()+" on "+t.coll.Name(), err)
	}
	return nil
}

// deleteExpired deletes the documents whose field is older than ttl.
func (t ttlIndex) deleteExpired(ctx context.Context, now time.Time, ttl time.Duration) (int64, error) {
	cut := now.Add(-ttl).UTC().Truncate(time.Millisecond)
	if t.sweep != nil {
		return t.sweep(ctx, cut)
	}
	res, err := t.coll.DeleteMany(ctx, bson.D{{Key: t.field, Value: bson.D{{Key: "$lt", Value: cut}}}})
	if err != nil {
		return 0, wrap("delete expired documents of "+t.coll.Name(), err)
	}
	return res.DeletedCount, nil
}

// MaintainOptions configure Maintain.
type MaintainOptions struct {
	// TTL is RESULTS_TTL; 0 keeps everything.
	TTL time.Duration
	// Every is how often FerretDB's expired documents are deleted
	// (default: a tenth of TTL, between 10s and 10m).
	Every time.Duration
	// Try bounds each database operation.
	Try time.Duration
	Log *slog.Logger
}

// Maintain creates the failure records' indexes and applies retention,
// trying again with back-off while the database is unreachable. On
// MongoDB it returns once the indexes are made; on FerretDB with a TTL it
// deletes expired documents every o.Every until ctx ends. It returns
// ctx's error when ctx ends.
func (s *Results) Maintain(ctx context.Context, o MaintainOptions) error {
	if o.Every <= 0 {
		o.Every = min(max(o.TTL/10, 10*time.Second), 10*time.Minute)
	}
	m := &maintainer{s: s, o: o}
	wait := prepareRetryMin
	for {
		err := m.once(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		next := o.Every
		switch {
		case err != nil && m.prepared && (isTimeout(err) || errors.Is(err, ErrSlow)):
			// A slow store: a delete that timed out is tried again next
			// period, as another try soon would only add to its load.
			o.Log.Warn("results retention timed out; trying again later", "err", err, "retry_in", next.String())
		case err != nil:
			o.Log.Warn("results retention failed; trying again later", "err", err, "retry_in", wait.String())
			next, wait = wait, min(2*wait, prepareRetryMax)
		case !m.selfExpire:
			return nil
		default:
			wait = prepareRetryMin
		}
		t := time.NewTimer(next)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// maintainer is one Maintain's state.
type maintainer struct {
	s *Results
	o MaintainOptions
	// prepared: the indexes are made. selfExpire: expired documents are
	// deleted here, the server having no TTL indexes.
	prepared, selfExpire bool
}

// codeNotImplemented is FerretDB's answer to an index option it lacks.
const codeNotImplemented = 238

func (m *maintainer) once(ctx context.Context) error {
	tctx, cancel := context.WithTimeout(ctx, m.o.Try)
	defer cancel()
	if !m.prepared {
		b, err := m.s.backend(tctx)
		if err != nil {
			return err
		}
		if err := m.s.Failures().EnsureIndexes(tctx); err != nil {
			return err
		}
		m.selfExpire = m.o.TTL > 0 && b.server() == FerretDB
		if b.server() == MongoDB {
			for _, t := range m.s.ttlIndexes() {
				err := t.ensure(tctx, m.o.TTL)
				if se := mongo.ServerError(nil); errors.As(err, &se) && se.HasErrorCode(codeNotImplemented) {
					m.selfExpire = true // a server that says MongoDB but has no TTL indexes
					break
				}
				if err != nil {
					return err
				}
			}
		}
		m.prepared = true
		how := "by TTL indexes"
		switch {
		case m.o.TTL <= 0:
			how = "never"
		case m.selfExpire:
			how = "deleted every " + m.o.Every.String()
		}
		m.o.Log.Info("results retention ready", "ttl", ttlText(m.o.TTL), "expired", how, "server", string(b.server()))
	}
	if !m.selfExpire {
		return nil
	}
	return m.s.DeleteExpired(tctx, time.Now(), m.o.TTL)
}

// DeleteExpired deletes the results stored, and the failure records
// written, more than ttl before now: what a TTL index does on MongoDB.
// Each collection is tried whether the other's failed or not.
func (s *Results) DeleteExpired(ctx context.Context, now time.Time, ttl time.Duration) error {
	if ttl <= 0 {
		return nil
	}
	var errs []error
	for _, t := range s.ttlIndexes() {
		if t.coll == s.coll {
			// FerretDB's keyed layout reads what expired by its journal.
			_, done, err := s.expireByJournal(ctx, now.Add(-ttl).UTC().Truncate(time.Millisecond))
			if err != nil || done {
				errs = append(errs, err)
				continue
			}
		}
		if _, err := t.deleteExpired(ctx, now, ttl); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("results retention: %w", err)
	}
	return nil
}

// expireFailures deletes the failure records that failed before cut,
// one sweep at a time in this process: a find of a batch of them that the
// server stops at ctx's deadline, then a delete by key (DeleteBefore),
// where a DeleteMany by time would read the whole collection on FerretDB
// with no way to stop it. A sweep that times out makes the next ones
// wait a back-off (the gate's); one refused meanwhile deletes nothing
// and is no error. Each worker sweeps every MaintainOptions.Every; the
// collection holds a record per failing job, not per job.
func (s *Results) expireFailures(ctx context.Context, cut time.Time) (int64, error) {
	var n int64
	err := s.gates.read(ctx, readExpiredFailures, func(ctx context.Context) error {
		var err error
		n, err = DeleteBefore(ctx, s.Failures().coll, "failed_at", cut)
		return err
	})
	if errors.Is(err, ErrSlow) { // refused, not timed out
		return 0, nil
	}
	return n, err
}

func ttlText(ttl time.Duration) string {
	if ttl <= 0 {
		return "off"
	}
	return ttl.String()
}

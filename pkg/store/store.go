// Package store is the MongoDB results store: it saves completed jobs
// without ever overwriting one, finds them by id, and reads them in
// completion order for the notifier's feed and replays.
//
// MongoDB and FerretDB (devmongo, the development server) need different
// writes, keys and indexes. Each has its own backend (backend.go), chosen
// once per store: on FerretDB results are keyed by their id as a string,
// the one lookup it serves by index, and the largest id comes from a
// bound kept beside them (maxid.go); what callers get is the same on
// both. One contract suite (TestContract) runs against each backend.
// The reads background loops repeat go through gates (gate.go): one of
// each kind in flight, and a kind that times out backs off.
package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/topology"

	"github.com/jobsys/jobs/pkg/job"
)

// Errors the callers match with errors.Is.
var (
	// ErrNotFound: no result has that id.
	ErrNotFound = errors.New("result not found")
	// ErrAlreadyStored: the same job's result is stored already; the
	// caller can treat its work as done.
	ErrAlreadyStored = errors.New("result already stored")
	// ErrConflict: a different job's result is stored under that id. It is
	// never overwritten.
	ErrConflict = errors.New("a different result is stored under this id")
	// ErrUnavailable: MongoDB could not be reached or did not answer in
	// time.
	ErrUnavailable = errors.New("database unavailable")
)

// Connect returns a client for uri that gives up on an unreachable server
// after timeout instead of the driver's default 30 seconds. The driver
// reconnects by itself when the server returns.
func Connect(uri, appName string, timeout time.Duration) (*mongo.Client, error) {
	opts := options.Client().ApplyURI(uri).
		SetAppName(appName).
		SetServerSelectionTimeout(timeout).
		SetConnectTimeout(timeout)
	c, err := mongo.Connect(opts)
	if err != nil {
		return nil, fmt.Errorf("connect to MongoDB: %w", err)
	}
	return c, nil
}

// Results is the collection of completed jobs.
type Results struct {
	coll *mongo.Collection
	// readConcern is the level coll reads at, when not the default: find
	// sends it with the commands it runs itself (see Majority).
	readConcern string

	// forced is the server WithServer named, if any; detected is the
	// one buildInfo named.
	forced   Server
	detected atomic.Pointer[Server]
	// chosen is the behaviour of the server behind coll, picked once: on
	// MongoDB by WithServer or at the first answer to buildInfo, on
	// FerretDB once the collection's layout is known too.
	chosen atomic.Pointer[backend]

	// gates keep the reads background loops repeat to one of each kind
	// in flight, and back off a kind that times out (gate.go).
	gates gates

	// bound is the id bound this process last saw (maxid.go).
	bound atomic.Uint64

	// journal keeps the stored order on FerretDB (journal.go).
	journal *journal
}

// Option configures Results.
type Option func(*Results)

// WithServer makes the store behave as for server instead of asking the
// server what it is; Auto (or an unknown name) asks.
func WithServer(server Server) Option {
	return func(s *Results) {
		if known(server) {
			s.forced = server
		}
	}
}

// NewResults returns the store for collection coll of database db. It
// does not contact the server: a service starts while MongoDB is down.
func NewResults(client *mongo.Client, db, coll string, opts ...Option) *Results {
	c := client.Database(db).Collection(coll)
	s := &Results{coll: c, gates: newGates(), journal: newJournal(c)}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Collection is the underlying collection, for change streams.
func (s *Results) Collection() *mongo.Collection { return s.coll }

// Server returns which server's behaviour the store has, asking the
// server on first use unless WithServer chose it.
func (s *Results) Server(ctx context.Context) (Server, error) {
	if s.forced != Auto {
		return s.forced, nil
	}
	if d := s.detected.Load(); d != nil {
		return *d, nil
	}
	server, err := detect(ctx, s.coll.Database().Client())
	if err != nil {
		return Auto, err
	}
	s.detected.CompareAndSwap(nil, &server)
	return server, nil
}

// settle keeps b as the behaviour once a write of b's has put a result
// in a collection that was empty: its layout is known from then on.
func (s *Results) settle(b backend) {
	if s.chosen.Load() == nil {
		s.chosen.CompareAndSwap(nil, &b)
	}
}

// backend returns the chosen behaviour, asking the server the first
// time (and, on FerretDB, the collection how it keys results, until it
// has a result). A failed question is asked again next time; concurrent
// first questions all get the first answer stored.
func (s *Results) backend(ctx context.Context) (backend, error) {
	if b := s.chosen.Load(); b != nil {
		return *b, nil
	}
	server, err := s.Server(ctx)
	if err != nil {
		return nil, err
	}
	var b backend = mongoBackend{}
	if server == FerretDB {
		fb, known, err := layoutOf(ctx, s.coll)
		if err != nil {
			return nil, err
		}
		if !known {
			return fb, nil // empty: the store's own layout, asked again next time
		}
		b = fb
	}
	s.chosen.CompareAndSwap(nil, &b)
	return *s.chosen.Load(), nil
}

// EnsureIndexes creates the indexes that the feed and replays read by,
// leaving those that exist alone: two on MongoDB, none on FerretDB,
// which would use none of them (devmongo indexes the string keys itself)
// and reads in stored order by its journal instead, which EnsureIndexes
// completes (journal.go).
func (s *Results) EnsureIndexes(ctx context.Context) error {
	if err := s.ensureIndexes(ctx); err != nil {
		return err
	}
	return s.ensureJournal(ctx)
}

func (s *Results) ensureIndexes(ctx context.Context) error {
	b, err := s.backend(ctx)
	if err != nil {
		return err
	}
	return b.ensureIndexes(ctx, s.coll)
}

// ensureJournal completes the journal where the layout keeps one.
func (s *Results) ensureJournal(ctx context.Context) error {
	b, err := s.backend(ctx)
	if err != nil {
		return err
	}
	if !keepsBound(b) {
		return nil
	}
	return s.journal.ensure(ctx, s.coll)
}

// ordered returns the journal when reads in stored order can go by it
// (FerretDB's keyed layout, once the journal is complete), else nil.
func (s *Results) ordered(ctx context.Context) (*journal, backend, error) {
	b, err := s.backend(ctx)
	if err != nil || !keepsBound(b) {
		return nil, b, err
	}
	ok, err := s.journal.complete(ctx)
	if err != nil || !ok {
		return nil, b, err
	}
	return s.journal, b, nil
}

// Back-off between tries of Prepare. The first retry comes soon because
// a stack often starts its services and MongoDB together; the cap keeps
// the indexes close behind a MongoDB that comes back late, while each
// failed try already waits out a server selection.
const (
	prepareRetryMin = 250 * time.Millisecond
	prepareRetryMax = 15 * time.Second
)

// Prepare learns which server the store talks to and creates its
// indexes, trying again with back-off until that is done or ctx ends
// (then it returns ctx's error); each try is bounded by try. Services run
// it in the background as they start, so they start, and keep their work
// waiting, while MongoDB is down.
func (s *Results) Prepare(ctx context.Context, try time.Duration, log *slog.Logger) error {
	for wait := prepareRetryMin; ; wait = min(2*wait, prepareRetryMax) {
		tctx, cancel := context.WithTimeout(ctx, try)
		err := s.ensureIndexes(tctx)
		cancel()
		if err == nil {
			// Unbounded but by ctx: journaling a store written before
			// the journal reads it whole, once, and may take longer.
			err = s.ensureJournal(ctx)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err == nil {
			server, _ := s.Server(ctx) // chosen by now
			log.Info("results store ready", "server", string(server), "collection", s.coll.Name())
			return nil
		}
		log.Warn("preparing the results store failed; trying again later", "err", err, "retry_in", wait.String())
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Save stores r with stored_at stamped, by the database's clock on
// MongoDB and by this process's just before the insert on FerretDB (where
// it first raises the id bound when r.ID reaches it). When
// a result with r's id exists it returns ErrAlreadyStored if it is the
// same job's, and ErrConflict otherwise; it never overwrites.
func (s *Results) Save(ctx context.Context, r job.Result) error {
	b, err := s.backend(ctx)
	if err != nil {
		return fmt.Errorf("save result %d: %w", r.ID, err)
	}
	if err := s.raiseBound(ctx, b, r.ID); err != nil {
		return fmt.Errorf("save result %d: %w", r.ID, err)
	}
	r.StoredAt = time.Time{}
	if keepsBound(b) {
		r.StoredAt = time.Now().UTC().Truncate(time.Millisecond)
		if err := s.journal.add(ctx, r.ID, r.StoredAt); err != nil {
			return fmt.Errorf("save result %d: %w", r.ID, err)
		}
	}
	err = b.insert(ctx, s.coll, r)
	if err == nil {
		s.settle(b)
		return nil
	}
	if !mongo.IsDuplicateKeyError(err) {
		return wrap(fmt.Sprintf("insert result %d", r.ID), err)
	}
	old, err := s.Find(ctx, r.ID)
	if err != nil {
		return fmt.Errorf("read result %d after duplicate key: %w", r.ID, err)
	}
	if old.SameWork(r) {
		return fmt.Errorf("result %d: %w", r.ID, ErrAlreadyStored)
	}
	return fmt.Errorf("result %d (stored hash %s, new hash %s): %w", r.ID, old.Hash, r.Hash, ErrConflict)
}

// Find returns the result with id.
func (s *Results) Find(ctx context.Context, id uint64) (job.Result, error) {
	var r job.Result
	b, err := s.backend(ctx)
	if err != nil {
		return r, fmt.Errorf("find result %d: %w", id, err)
	}
	err = s.coll.FindOne(ctx, bson.D{{Key: "_id", Value: b.key(id)}}).Decode(&r)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return r, fmt.Errorf("result %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return r, wrap(fmt.Sprintf("find result %d", id), err)
	}
	return r, nil
}

// FindMany returns the stored results among ids, by id: ids without a
// result are absent from the map. MongoDB reads them in one query;
// FerretDB, which reads a whole collection for $in, one indexed lookup
// each.
func (s *Results) FindMany(ctx context.Context, ids []uint64) (map[uint64]job.Result, error) {
	out := make(map[uint64]job.Result, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	b, err := s.backend(ctx)
	if err != nil {
		return nil, fmt.Errorf("find the results of %d jobs: %w", len(ids), err)
	}
	err = s.gates.read(ctx, readFindMany, func(ctx context.Context) (err error) {
		out, err = s.lookup(b, false)(ctx, ids)
		return err
	})
	if err != nil {
		return nil, wrap(fmt.Sprintf("find the results of %d jobs", len(ids)), err)
	}
	return out, nil
}

// lookup reads results by ids with b, ungated; wide reads journalLookups
// at a time on FerretDB, for a read in stored order, which holds its
// gate's one place.
func (s *Results) lookup(b backend, wide bool) reader {
	return func(ctx context.Context, ids []uint64) (map[uint64]job.Result, error) {
		out := make(map[uint64]job.Result, len(ids))
		if len(ids) == 0 {
			return out, nil
		}
		var cur *mongo.Cursor
		var err error
		if fb, ok := b.(ferretBackend); ok && wide && !fb.numericIDs {
			cur, err = fb.findEach(ctx, s.coll, ids, journalLookups)
		} else {
			cur, err = b.findMany(ctx, s.coll, ids)
		}
		if err != nil {
			return nil, err
		}
		defer cur.Close(ctx)
		for cur.Next(ctx) {
			var r job.Result
			if err := cur.Decode(&r); err != nil {
				return nil, fmt.Errorf("decode a result: %w", err)
			}
			out[r.ID] = r
		}
		return out, cur.Err()
	}
}

// MaxID returns the largest stored id, or 0 when there is none. On
// FerretDB it reads a few ids below a bound Save keeps (maxid.go).
func (s *Results) MaxID(ctx context.Context) (uint64, error) {
	b, err := s.backend(ctx)
	if err != nil {
		return 0, fmt.Errorf("find largest id: %w", err)
	}
	var r job.Result
	opts := options.FindOne().SetSort(bson.D{{Key: "_id", Value: -1}}).SetProjection(bson.D{{Key: "_id", Value: 1}})
	err = s.gates.read(ctx, readMaxID, func(ctx context.Context) error {
		if keepsBound(b) {
			id, ok, err := s.maxIDByBound(ctx, b)
			if ok || err != nil {
				r.ID = id
				return err
			}
		}
		return s.coll.FindOne(ctx, bson.D{}, opts).Decode(&r)
	})
	if errors.Is(err, mongo.ErrNoDocuments) {
		return 0, nil
	}
	if err != nil {
		return 0, wrap("find largest id", err)
	}
	return r.ID, nil
}

// After returns up to limit results that come after (at, id) in the order
// they were stored: stored later, or in the same millisecond with a
// larger id.
func (s *Results) After(ctx context.Context, at time.Time, id uint64, limit int) ([]job.Result, error) {
	opts := options.Find().SetSort(bson.D{{Key: "stored_at", Value: 1}, {Key: "_id", Value: 1}})
	if limit > 0 {
		opts.SetLimit(int64(limit))
	}
	var out []job.Result
	err := s.gates.read(ctx, readAfter, func(ctx context.Context) error {
		j, b, err := s.ordered(ctx)
		if err != nil {
			return err
		}
		if j != nil {
			out, err = j.after(ctx, s.lookup(b, true), at, id, limit)
			return err
		}
		filter := bson.D{{Key: "$or", Value: bson.A{
			bson.D{{Key: "stored_at", Value: bson.D{{Key: "$gt", Value: at}}}},
			bson.D{{Key: "stored_at", Value: at}, {Key: "_id", Value: bson.D{{Key: "$gt", Value: b.key(id)}}}},
		}}}
		out, err = s.find(ctx, filter, opts)
		return err
	})
	if err != nil {
		return nil, wrap("find results after cursor", err)
	}
	return out, nil
}

// Ping checks that MongoDB answers, and that no kind of read backs off
// after timing out (then it returns ErrSlow): a readiness check says the
// store is too slow rather than let every request time out.
func (s *Results) Ping(ctx context.Context) error {
	if err := s.coll.Database().Client().Ping(ctx, nil); err != nil {
		return wrap("ping", err)
	}
	if kinds := s.gates.slow(); len(kinds) > 0 {
		return slowError(kinds)
	}
	return nil
}

// wrap adds ErrUnavailable to errors that mean the server is out of
// reach, so handlers can answer 503.
func wrap(op string, err error) error {
	if IsUnavailable(err) {
		return fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// IsUnavailable reports whether err means MongoDB could not be reached
// or did not answer in time.
func IsUnavailable(err error) bool {
	var sse topology.ServerSelectionError
	return errors.As(err, &sse) || mongo.IsNetworkError(err) || mongo.IsTimeout(err) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrUnavailable)
}

// isDriverTimeout reports the driver's timeouts, the server's maxTimeMS
// expiry among them.
func isDriverTimeout(err error) bool { return mongo.IsTimeout(err) }

// Import writes results as they are, stored_at included, in bulk: for
// seeding a store (benchmarks, tests) and for copying results between
// stores. Results whose id is stored already are left alone and
// reported by the returned count of those written; unlike Save, it does
// not compare their work.
func (s *Results) Import(ctx context.Context, rs []job.Result) (int, error) {
	if len(rs) == 0 {
		return 0, nil
	}
	b, err := s.backend(ctx)
	if err != nil {
		return 0, fmt.Errorf("import %d results: %w", len(rs), err)
	}
	docs := make([]any, len(rs))
	var top uint64
	for i, r := range rs {
		if docs[i], err = b.document(r); err != nil {
			return 0, err
		}
		top = max(top, r.ID)
	}
	if err := s.raiseBound(ctx, b, top); err != nil {
		return 0, fmt.Errorf("import %d results: %w", len(rs), err)
	}
	if keepsBound(b) {
		es := make([]entry, 0, len(rs))
		for _, r := range rs {
			if !r.StoredAt.IsZero() {
				es = append(es, entryOf(r))
			}
		}
		if err := s.journal.addMany(ctx, es); err != nil {
			return 0, fmt.Errorf("import %d results: %w", len(rs), err)
		}
	}
	res, err := s.coll.InsertMany(ctx, docs, options.InsertMany().SetOrdered(false))
	if err == nil {
		s.settle(b)
	}
	n := 0
	if res != nil {
		n = len(res.InsertedIDs)
	}
	var bwe mongo.BulkWriteException
	if errors.As(err, &bwe) && bwe.WriteConcernError == nil {
		for _, we := range bwe.WriteErrors {
			if !mongo.IsDuplicateKeyError(we) {
				return n, wrap(fmt.Sprintf("import %d results", len(rs)), err)
			}
		}
		return len(rs) - len(bwe.WriteErrors), nil
	}
	if err != nil {
		return n, wrap(fmt.Sprintf("import %d results", len(rs)), err)
	}
	return n, nil
}

// find returns what filter and opts select. With a limit it runs as one
// find command, single batch, so that the driver sends the caller's
// deadline as maxTimeMS, which it leaves out of Collection.Find (whose
// cursor outlives the call): the server then stops working on a query
// whose caller gave up, instead of scanning on for no one.
func (s *Results) find(ctx context.Context, filter bson.D, opts *options.FindOptionsBuilder) ([]job.Result, error) {
	var o options.FindOptions
	for _, set := range opts.List() {
		if err := set(&o); err != nil {
			return nil, err
		}
	}
	if o.Limit == nil || *o.Limit <= 0 {
		cur, err := s.coll.Find(ctx, filter, opts)
		if err != nil {
			return nil, err
		}
		var out []job.Result
		return out, cur.All(ctx, &out)
	}
	cmd := bson.D{{Key: "find", Value: s.coll.Name()}, {Key: "filter", Value: filter}}
	if o.Sort != nil {
		cmd = append(cmd, bson.E{Key: "sort", Value: o.Sort})
	}
	cmd = append(cmd, bson.E{Key: "limit", Value: *o.Limit}, bson.E{Key: "batchSize", Value: *o.Limit},
		bson.E{Key: "singleBatch", Value: true})
	if s.readConcern != "" { // RunCommand leaves the collection's out
		cmd = append(cmd, bson.E{Key: "readConcern", Value: bson.D{{Key: "level", Value: s.readConcern}}})
	}
	var reply struct {
		Cursor struct {
			FirstBatch []job.Result `bson:"firstBatch"`
		} `bson:"cursor"`
	}
	if err := s.coll.Database().RunCommand(ctx, cmd).Decode(&reply); err != nil {
		return nil, err
	}
	return reply.Cursor.FirstBatch, nil
}

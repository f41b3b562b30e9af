package feed

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

// Opener opens a change stream on the results collection, starting after
// token when it is not nil. MongoOpener is the real one.
type Opener interface {
	Open(ctx context.Context, startAfter bson.Raw) (Stream, error)
}

// Stream is the part of *mongo.ChangeStream the feed uses.
type Stream interface {
	TryNext(ctx context.Context) bool
	RemainingBatchLength() int
	Decode(v any) error
	ResumeToken() bson.Raw
	// ID is the server's cursor id: 0 once the server closed the cursor,
	// which it does after an invalidate whether or not the pipeline let
	// the invalidate through.
	ID() int64
	Err() error
	Close(ctx context.Context) error
}

var _ Stream = (*mongo.ChangeStream)(nil)

// MongoOpener watches the inserts into a collection, and the invalidate
// that ends the stream when it is dropped or renamed. A completion is an
// insert: an update or replace of a stored result (an edit in
// mongo-express, a backfill) is not a new completion, so the stream
// leaves them out, and needs no full-document lookup.
type MongoOpener struct {
	Coll *mongo.Collection
	// MaxAwait is how long the server holds an empty getMore (default 500ms).
	MaxAwait time.Duration
}

// watched are the operation types the feed reads.
var watched = bson.A{"insert", "invalidate"}

// Open implements Opener. It resumes with startAfter, which MongoDB takes
// for any token, the invalidate's included (resumeAfter refuses that
// one).
func (o MongoOpener) Open(ctx context.Context, startAfter bson.Raw) (Stream, error) {
	pipeline := mongo.Pipeline{{{Key: "$match", Value: bson.D{{Key: "operationType", Value: bson.D{{Key: "$in", Value: watched}}}}}}}
	opts := options.ChangeStream().SetMaxAwaitTime(cmpDuration(o.MaxAwait, 500*time.Millisecond))
	if startAfter != nil {
		opts.SetStartAfter(startAfter)
	}
	cs, err := o.Coll.Watch(ctx, pipeline, opts)
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", o.Coll.Name(), err)
	}
	return cs, nil
}

func cmpDuration(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// Server error codes the feed reacts to (the server's
// src/mongo/base/error_codes.yml).
const (
	codeUnauthorized            = 13    // the user lacks the changeStream (or find) privilege
	codeCommandNotFound         = 59    // FerretDB and old servers: unknown command
	codeInvalidNamespace        = 73    // not a namespace change streams can watch
	codeCommandNotSupported     = 115   // the command is not supported here
	codeCommandNotSupportedView = 166   // the results collection is a view
	codeNotImplemented          = 238   // FerretDB: "$changeStream" stage not implemented
	codeNotReplicaSet           = 40573 // standalone mongod: change streams need a replica set
	codeUnrecognizedStage       = 40324 // "Unrecognized pipeline stage name"
)

// transientCodes are the errors a retry with the same token cures: the
// change-streams spec's resumable errors (source/change-streams/
// change-streams.md, "Resumable Error", for servers that send no
// errorLabels) and the interruptions of an election or a shutdown.
var transientCodes = []int{
	6,     // HostUnreachable
	7,     // HostNotFound
	43,    // CursorNotFound
	50,    // MaxTimeMSExpired
	63,    // StaleShardVersion
	89,    // NetworkTimeout
	91,    // ShutdownInProgress
	133,   // FailedToSatisfyReadPreference
	150,   // StaleEpoch
	189,   // PrimarySteppedDown
	202,   // NetworkInterfaceExceededTimeLimit
	216,   // ElectionInProgress
	234,   // RetryChangeStream
	262,   // ExceededTimeLimit
	9001,  // SocketException
	10107, // NotWritablePrimary
	11600, // InterruptedAtShutdown
	11601, // Interrupted
	11602, // InterruptedDueToReplStateChange
	13388, // StaleConfig
	13435, // NotPrimaryNoSecondaryOk
	13436, // NotPrimaryOrSecondary
}

// What the feed does about an error from opening or reading a stream.
type verdict int

const (
	// retry: transient; open again after a pause, resuming after the
	// saved token.
	retry verdict = iota
	// restart: anything else the server answered; the token may be what
	// it refuses (one it cannot parse, one from another collection or
	// another server, one that fell out of the oplog). Open a new stream
	// from now and catch up by querying stored_at from the last cursor
	// seen: a catch-up costs a query, a token retried for ever stalls
	// the feed.
	restart
	// permanent: no retry cures it (a missing privilege, a view, a bad
	// namespace): say so, stay unhealthy and retry slowly.
	permanent
	// unsupported: this server has no change streams; poll instead.
	unsupported
)

// classify reads a server's answer.
func classify(err error) verdict {
	var se mongo.ServerError
	if !errors.As(err, &se) || mongo.IsNetworkError(err) || mongo.IsTimeout(err) {
		return retry // the network, a timeout, no server to select
	}
	switch {
	case se.HasErrorCode(codeNotReplicaSet), se.HasErrorCode(codeNotImplemented),
		se.HasErrorCode(codeCommandNotFound), se.HasErrorCode(codeCommandNotSupported),
		se.HasErrorCode(codeUnrecognizedStage):
		return unsupported
	case se.HasErrorCode(codeUnauthorized), se.HasErrorCode(codeCommandNotSupportedView),
		se.HasErrorCode(codeInvalidNamespace):
		return permanent
	case se.HasErrorLabel("NonResumableChangeStreamError"):
		return restart
	case se.HasErrorLabel("ResumableChangeStreamError"), se.HasErrorLabel("RetryableWriteError"):
		return retry
	}
	for _, c := range transientCodes {
		if se.HasErrorCode(c) {
			return retry
		}
	}
	if !hasCode(se) {
		return retry // no code to read: nothing says the token is bad
	}
	return restart
}

// hasCode reports whether the server's answer carries an error code.
func hasCode(se mongo.ServerError) bool {
	var ce mongo.CommandError
	if errors.As(se, &ce) {
		return ce.Code != 0
	}
	return true
}

// permanentPause is how long the feed waits before trying again after
// an error no retry cures: long enough not to flood the server's log,
// short enough to notice a granted privilege soon.
const permanentPause = 30 * time.Second

// explain says what an operator must fix for a permanent error.
func explain(err error) string {
	var se mongo.ServerError
	errors.As(err, &se)
	switch {
	case se != nil && se.HasErrorCode(codeUnauthorized):
		return "the notifier's MongoDB user lacks the changeStream privilege (and find) on the results collection: grant them, e.g. the read role on its database"
	case se != nil && se.HasErrorCode(codeCommandNotSupportedView):
		return "the results collection is a view, and change streams cannot watch a view: point the notifier at the collection itself"
	}
	return "MongoDB refuses change streams on the results collection's namespace (admin, local, config and system.* cannot be watched): set another database or collection"
}

// ErrNoChangeStreams means the server cannot watch a collection.
var ErrNoChangeStreams = errors.New("the MongoDB server has no change streams")

// errInvalidated: the watched collection was dropped or renamed, or the
// server closed the cursor for another reason; the stream starts again
// after the resume token it gave last.
var errInvalidated = errors.New("change stream invalidated")

// changeEvent is the part of a change event the feed reads.
type changeEvent struct {
	ID            bson.Raw    `bson:"_id"`
	OperationType string      `bson:"operationType"`
	FullDocument  *job.Result `bson:"fullDocument"`
}

// streamer tails the results through change streams and keeps its resume
// token in the state store.
type streamer struct {
	f    *Feed
	seen *seen
	// token and last are what has been delivered so far; saved says
	// whether the state store has them.
	token bson.Raw
	last  position
	saved bool
	// tokenAt is when the loaded token was saved: where a catch-up
	// starts when the token is dropped before anything was delivered.
	tokenAt time.Time
	// delivered says completions were delivered since the last save.
	delivered bool
}

// run tails until ctx ends or the server turns out to have no change
// streams (ErrNoChangeStreams). A from that is not zero is where another
// feed (polling) stopped: the stream then starts from now and catches up
// from there instead of resuming a saved token.
func (s *streamer) run(ctx context.Context, sink Sink, from position) error {
	f := s.f
	catchUp := false
	if from.at.IsZero() {
		st, err := loadState(ctx, f.state, f.id, f.log)
		if err != nil {
			return err // only ctx ends this
		}
		s.token, s.tokenAt = st.Token, st.SavedAt
		s.last, _ = parsePosition(st.Cursor)
		s.saved = true
	} else {
		s.last, catchUp = from, true
	}
	opened := false
	defer s.save(context.WithoutCancel(ctx))
	// failures counts the failures in a row, of opening and of reading
	// alike, for the back-off; a stream that ran well for healthyAfter
	// clears it.
	failures := 0
	for {
		cs, err := f.opener.Open(ctx, s.token)
		if ctx.Err() != nil {
			if cs != nil {
				_ = cs.Close(context.WithoutCancel(ctx))
			}
			return nil
		}
		if err != nil {
			switch classify(err) {
			case unsupported:
				return fmt.Errorf("%w: %w", ErrNoChangeStreams, err)
			case permanent:
				f.healthy.Store(false)
				f.log.Error("change stream refused: "+explain(err), "err", err, "retry_in", permanentPause.String())
				if !sleep(ctx, permanentPause) {
					return nil
				}
				continue
			case restart:
				if s.token != nil {
					f.log.Warn("change stream cannot resume after the saved token: starting a new stream and catching up from the last cursor", "err", err, "cursor", s.last.cursor())
					s.token, s.saved, catchUp = nil, false, true
					continue
				}
			}
			f.healthy.Store(false)
			f.log.Warn("open change stream", "err", err, "failures", failures+1)
			if !sleep(ctx, backoff(failures)) {
				return nil
			}
			failures++
			continue
		}
		if !opened {
			opened = true
			f.setMode(ModeChangeStream)
			f.markStarted()
		}
		f.healthy.Store(true)
		// The opening aggregate's resume token: without it, a first
		// getMore that fails would reopen from a later "now" and lose
		// what was committed in between.
		if tok := cs.ResumeToken(); s.token == nil && tok != nil {
			s.token, s.saved = cloneRaw(tok), false
		}
		if catchUp {
			if err := s.catchUp(ctx, sink); err != nil {
				f.log.Warn("catch up after a lost change stream", "err", err)
				_ = cs.Close(ctx)
				if !sleep(ctx, backoff(failures)) {
					return nil
				}
				failures++
				continue // catchUp stays set
			}
			catchUp = false
		}
		began := time.Now()
		err = s.consume(ctx, cs, sink)
		_ = cs.Close(context.WithoutCancel(ctx))
		s.save(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(began) >= healthyAfter {
			failures = 0
		}
		switch {
		case errors.Is(err, errInvalidated):
			// startAfter the invalidate's token continues with what is
			// stored once the collection exists again, missing nothing.
			f.log.Warn("change stream invalidated (the results collection was dropped or renamed): starting after it", "cursor", s.last.cursor())
		case classify(err) == unsupported:
			return fmt.Errorf("%w: %w", ErrNoChangeStreams, err)
		case classify(err) == restart:
			// 136 CappedPositionLost, 286, 280 and whatever else is not
			// transient: the token is no good, start over at once.
			f.log.Warn("change stream cannot go on after its token: starting a new stream and catching up from the last cursor", "err", err, "cursor", s.last.cursor())
			s.token, s.saved, catchUp = nil, false, true
		case classify(err) == permanent:
			f.healthy.Store(false)
			f.log.Error("change stream refused: "+explain(err), "err", err, "retry_in", permanentPause.String())
			if !sleep(ctx, permanentPause) {
				return nil
			}
		default:
			f.healthy.Store(false)
			f.log.Warn("change stream failed: resuming after the saved token", "err", err, "failures", failures+1)
			if !sleep(ctx, backoff(failures)) {
				return nil
			}
			failures++
		}
	}
}

// healthyAfter is how long a stream must run before its failures in a
// row are forgotten.
const healthyAfter = 30 * time.Second

// consume reads cs until it fails or ctx ends, delivering each server
// batch as one and saving the token after it; while the stream is idle
// only the token moves, and it is saved every SaveEvery (a minute).
func (s *streamer) consume(ctx context.Context, cs Stream, sink Sink) error {
	f := s.f
	lastSave := time.Now()
	for {
		var batch []job.Result
		for cs.TryNext(ctx) {
			var ev changeEvent
			if err := cs.Decode(&ev); err != nil {
				f.log.Warn("decode change event", "err", err)
			} else if ev.OperationType == "invalidate" {
				s.deliver(ctx, batch, sink)
				s.token, s.saved = cloneRaw(ev.ID), false
				return errInvalidated
			} else if ev.OperationType == "insert" && ev.FullDocument != nil && !ev.FullDocument.StoredAt.IsZero() {
				batch = append(batch, *ev.FullDocument)
			}
			if cs.RemainingBatchLength() == 0 {
				break
			}
		}
		if err := cs.Err(); err != nil {
			s.deliver(ctx, batch, sink)
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if tok := cs.ResumeToken(); tok != nil && !bytesEqual(tok, s.token) {
			s.token, s.saved = cloneRaw(tok), false
		}
		if cs.ID() == 0 {
			// Closed by the server without an error: after an invalidate
			// the pipeline filtered out, or a killed cursor. Reading on
			// would spin; start again after its last token.
			s.deliver(ctx, batch, sink)
			return errInvalidated
		}
		if len(batch) > 0 {
			s.deliver(ctx, batch, sink)
		}
		// Saved at most once a second while completions flow (a
		// restart repeats at most that second, which clients drop by
		// id), and every SaveEvery while only the idle token moves.
		if !s.saved && (time.Since(lastSave) >= f.saveEvery || (s.delivered && time.Since(lastSave) >= busySave)) {
			s.save(ctx)
			s.delivered = false
			lastSave = time.Now()
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// busySave is how often the token is saved while completions flow.
const busySave = time.Second

// deliver hands the results not seen before to sink and moves the last
// cursor.
func (s *streamer) deliver(ctx context.Context, rs []job.Result, sink Sink) {
	if len(rs) == 0 {
		return
	}
	if fresh := s.seen.fresh(rs); len(fresh) > 0 {
		sink(ctx, fresh)
	}
	for _, r := range rs {
		if p := positionOf(r); s.last.less(p) {
			s.last = p
		}
	}
	s.saved, s.delivered = false, true
	// Overlap with a catch-up lasts seconds; a minute is plenty.
	s.seen.prune(s.last.at.Add(-time.Minute))
}

// catchUp delivers every stored result after the last cursor, for the
// time no stream was watching.
func (s *streamer) catchUp(ctx context.Context, sink Sink) error {
	since := s.last.at
	if since.IsZero() {
		// Nothing was delivered yet, but a token was saved at tokenAt:
		// everything stored before it was seen then.
		since = s.tokenAt
	}
	if since.IsZero() {
		return nil // nothing was ever delivered: there is nothing to catch up on
	}
	// From the look-back before the last cursor: a result stamped just
	// before it but committed after it is not skipped; what was
	// delivered already is dropped by id: all of it while this process
	// ran, and the last cursor's own after a restart.
	if !s.last.at.IsZero() {
		s.seen.fresh([]job.Result{{ID: s.last.id, StoredAt: s.last.at}})
	}
	from := position{at: since.Add(-s.f.lookback)}
	n := 0
	for {
		rs, err := s.f.catchUp.After(ctx, from.at, from.id, pageSize)
		if err != nil {
			return fmt.Errorf("catch up after %s: %w", from.cursor(), err)
		}
		s.deliver(ctx, rs, sink)
		n += len(rs)
		if len(rs) < pageSize {
			break
		}
		from = positionOf(rs[len(rs)-1])
	}
	s.f.log.Info("caught up after a lost change stream", "results", n)
	return nil
}

// save writes the token and the last cursor to the state store, unless
// they are saved already.
func (s *streamer) save(ctx context.Context) {
	if s.saved {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	st := State{Token: s.token, Cursor: s.last.cursor()}
	if err := s.f.state.Save(ctx, s.f.id, st); err != nil {
		s.f.log.Warn("save resume token", "err", err)
		return
	}
	s.saved = true
}

func bytesEqual(a, b bson.Raw) bool { return string(a) == string(b) }

func cloneRaw(r bson.Raw) bson.Raw { return append(bson.Raw(nil), r...) }

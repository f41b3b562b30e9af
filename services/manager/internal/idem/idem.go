// Package idem keeps the Idempotency-Key record of POST: which job each
// key created, in a small MongoDB collection shared by every manager, so
// that a client that retries a POST with the same key never makes a
// second job, whichever manager answers.
//
// A key is claimed before the job is put, by inserting a document with
// the key as its string _id: of two concurrent requests with one key,
// across managers too, exactly one insert succeeds. The winner puts the
// job and records its id (Done), gives the key back when the put surely
// failed (Release), or marks it unknown when it cannot tell (Unknown).
// A record lives for the window: a MongoDB TTL index removes it after
// that, and on FerretDB, which has no TTL monitor, Maintain deletes
// expired records itself, one manager per interval; a record past its
// window is never answered from, whether removed yet or not.
package idem

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/jobsys/jobs/pkg/store"
)

// Collection is the collection of the records, in the results' database.
const Collection = "idempotency_keys"

// MaxKeyLen is the longest key taken, in bytes.
const MaxKeyLen = 255

// ValidKey reports whether k is 1 to MaxKeyLen visible ASCII characters
// other than the double quote.
func ValidKey(k string) bool {
	if len(k) == 0 || len(k) > MaxKeyLen {
		return false
	}
	for i := range len(k) {
		if c := k[i]; c < 0x21 || c > 0x7e || c == '"' {
			return false
		}
	}
	return true
}

// Outcome is what a claim found.
type Outcome int

// The outcomes of Claim.
const (
	// Claimed: the key is the caller's; it puts the job, then calls
	// Done, Release or Unknown.
	Claimed Outcome = iota
	// Replay: a request with this key created Record's job.
	Replay
	// InProgress: another request with this key is being served.
	InProgress
	// Unknown: a request with this key may have created a job whose id
	// is not known: the job queue did not answer its put, or the manager
	// that served it stopped meanwhile.
	Unknown
	// Mismatch: the key was used for a different request.
	Mismatch
)

// Record is the job a key created and what the POST answered.
type Record struct {
	ID    uint64
	Tube  string
	State string
}

// Claim is the result of Keys.Claim.
type Claim struct {
	Outcome Outcome
	// Record is the job, for Replay.
	Record Record
	key    string
	token  string
}

// doc is a record as stored.
type doc struct {
	Key         string    `bson:"_id"`
	Fingerprint string    `bson:"fp"`
	State       string    `bson:"state"` // pending, done or unknown
	Token       string    `bson:"token"` // who claimed it
	At          time.Time `bson:"at"`    // when it was claimed
	Job         int64     `bson:"job,omitempty"`
	Tube        string    `bson:"tube,omitempty"`
	JobState    string    `bson:"job_state,omitempty"`
}

const (
	statePending = "pending"
	stateDone    = "done"
	stateUnknown = "unknown"
)

// Defaults of Options.
const (
	// DefaultWait is how long a request waits for another with the same
	// key to finish before it answers that it is in progress.
	DefaultWait = time.Second
	// DefaultAbandon is how long a claim may stay pending: a put and
	// its record take at most a few seconds, so one pending longer was
	// left by a manager that stopped mid-request.
	DefaultAbandon = 15 * time.Second
)

// Options configure Keys.
type Options struct {
	// Window is how long a key is remembered.
	Window time.Duration
	// Wait and Abandon: see DefaultWait and DefaultAbandon.
	Wait, Abandon time.Duration
	Logger        *slog.Logger
	// Server, when set, is the server the records live on; otherwise
	// Maintain learns it (until then writes go as on MongoDB).
	Server store.Server
}

// Keys is the record of the keys.
type Keys struct {
	coll *mongo.Collection
	opt  Options
	// byKey: the records live on FerretDB (Maintain learns it), where a
	// write whose filter is more than {_id: key} reads every record.
	byKey atomic.Bool
}

// New returns the records in collection Collection of database db.
func New(client *mongo.Client, db string, o Options) *Keys {
	if o.Wait <= 0 {
		o.Wait = DefaultWait
	}
	if o.Abandon <= 0 {
		o.Abandon = DefaultAbandon
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	k := &Keys{coll: client.Database(db).Collection(Collection), opt: o}
	k.byKey.Store(o.Server == store.FerretDB)
	return k
}

// Window is how long a key is remembered.
func (k *Keys) Window() time.Duration { return k.opt.Window }

// Claim claims key for the request whose fingerprint is fp, or says what
// an earlier request with the key did. It waits up to Options.Wait for a
// request in progress with the same key.
func (k *Keys) Claim(ctx context.Context, key, fp string) (Claim, error) {
	c := Claim{key: key}
	waitUntil := time.Now().Add(k.opt.Wait)
	for tries := 0; ; tries++ {
		now := time.Now()
		c.token = token()
		fresh := doc{Key: key, Fingerprint: fp, State: statePending, Token: c.token, At: now}
		_, err := k.coll.InsertOne(ctx, fresh)
		if err == nil {
			c.Outcome = Claimed
			return c, nil
		}
		if !mongo.IsDuplicateKeyError(err) {
			return c, fmt.Errorf("claim Idempotency-Key: %w", err)
		}
		var d doc
		err = k.coll.FindOne(ctx, bson.D{{Key: "_id", Value: key}}).Decode(&d)
		switch {
		case errors.Is(err, mongo.ErrNoDocuments) && tries < 10:
			continue // removed meanwhile: claim it again
		case err != nil:
			return c, fmt.Errorf("read Idempotency-Key record: %w", err)
		}
		if now.Sub(d.At) >= k.opt.Window {
			// Expired, not yet removed: take it over, unless another
			// request just did.
			res, err := k.coll.ReplaceOne(ctx, bson.D{{Key: "_id", Value: key}, {Key: "token", Value: d.Token}}, fresh)
			if err != nil {
				return c, fmt.Errorf("renew Idempotency-Key record: %w", err)
			}
			if res.MatchedCount == 1 {
				c.Outcome = Claimed
				return c, nil
			}
			if tries < 10 {
				continue
			}
		}
		switch {
		case d.Fingerprint != fp:
			c.Outcome = Mismatch
		case d.State == stateDone:
			c.Outcome = Replay
			c.Record = Record{ID: uint64(d.Job), Tube: d.Tube, State: d.JobState}
		case d.State == stateUnknown || now.Sub(d.At) >= k.opt.Abandon:
			c.Outcome = Unknown
		case now.After(waitUntil):
			c.Outcome = InProgress
		default:
			t := time.NewTimer(25 * time.Millisecond)
			select {
			case <-ctx.Done():
				t.Stop()
				c.Outcome = InProgress
				return c, nil
			case <-t.C:
			}
			continue
		}
		return c, nil
	}
}

// Done records the job c's request created.
func (k *Keys) Done(ctx context.Context, c Claim, r Record) error {
	err := k.ifClaimed(ctx, c, func(filter bson.D) error {
		_, err := k.coll.UpdateOne(ctx, filter, bson.D{{Key: "$set", Value: bson.D{
			{Key: "state", Value: stateDone}, {Key: "job", Value: int64(r.ID)},
			{Key: "tube", Value: r.Tube}, {Key: "job_state", Value: r.State},
		}}})
		return err
	})
	if err != nil {
		return fmt.Errorf("record the job of Idempotency-Key: %w", err)
	}
	return nil
}

// Release gives c's key back: its request created no job.
func (k *Keys) Release(ctx context.Context, c Claim) error {
	err := k.ifClaimed(ctx, c, func(filter bson.D) error {
		_, err := k.coll.DeleteOne(ctx, filter)
		return err
	})
	if err != nil {
		return fmt.Errorf("release Idempotency-Key: %w", err)
	}
	return nil
}

// Unknown marks c's key as having maybe created a job whose id is not
// known.
func (k *Keys) Unknown(ctx context.Context, c Claim) error {
	err := k.ifClaimed(ctx, c, func(filter bson.D) error {
		_, err := k.coll.UpdateOne(ctx, filter, bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: stateUnknown}}}})
		return err
	})
	if err != nil {
		return fmt.Errorf("mark Idempotency-Key unknown: %w", err)
	}
	return nil
}

// ifClaimed runs write with a filter that selects c's record while c's
// claim holds it. That is {_id, token}, except on FerretDB, which would
// read every record for it: there the record is read by key, its token
// compared, and the filter is {_id} alone, a lookup by index on devmongo.
// The race that accepts: a claim that takes the key over between that
// read and that write, which it does only once the window (a minute at
// least) has passed since c's claim, while c's request lasts seconds.
func (k *Keys) ifClaimed(ctx context.Context, c Claim, write func(filter bson.D) error) error {
	if !k.byKey.Load() {
		return write(bson.D{{Key: "_id", Value: c.key}, {Key: "token", Value: c.token}})
	}
	byKey := bson.D{{Key: "_id", Value: c.key}}
	var d doc
	err := k.coll.FindOne(ctx, byKey, options.FindOne().SetProjection(bson.D{{Key: "token", Value: 1}})).Decode(&d)
	switch {
	case errors.Is(err, mongo.ErrNoDocuments):
		return nil // no longer there: nothing of c's to write
	case err != nil:
		return err
	case d.Token != c.token:
		return nil // taken over
	}
	return write(byKey)
}

// Sweep deletes the records past the window, a batch at a time, each
// found by a find the server stops at ctx's deadline and deleted by key
// (store.DeleteBefore): on FerretDB a DeleteMany by time would read the
// whole collection with no way to stop it.
func (k *Keys) Sweep(ctx context.Context) (int64, error) {
	n, err := store.DeleteBefore(ctx, k.coll, "at", time.Now().Add(-k.opt.Window))
	if err != nil {
		return n, fmt.Errorf("delete expired Idempotency-Key records: %w", err)
	}
	return n, nil
}

// ensureTTL makes MongoDB remove records past the window, changing the
// index's window when it was made with another.
func (k *Keys) ensureTTL(ctx context.Context) error {
	secs := int32(min(k.opt.Window/time.Second, 1<<31-1))
	_, err := k.coll.Indexes().CreateOne(ctx, mongo.IndexModel{
		Keys: bson.D{{Key: "at", Value: 1}}, Options: options.Index().SetName("at_ttl").SetExpireAfterSeconds(secs),
	})
	var se mongo.ServerError
	if errors.As(err, &se) && (se.HasErrorCode(85) || se.HasErrorCode(86)) { // IndexOptionsConflict, IndexKeySpecsConflict
		err = k.coll.Database().RunCommand(ctx, bson.D{{Key: "collMod", Value: k.coll.Name()},
			{Key: "index", Value: bson.D{{Key: "name", Value: "at_ttl"}, {Key: "expireAfterSeconds", Value: secs}}}}).Err()
	}
	if err != nil {
		return fmt.Errorf("create the TTL index of %s: %w", k.coll.Name(), err)
	}
	return nil
}

// SweepTimeout bounds one sweep on FerretDB.
const SweepTimeout = 30 * time.Second

// FullSweepEvery is how many intervals apart Maintain sweeps the whole
// collection on FerretDB; the sweeps between read its start only.
const FullSweepEvery = 60

// Maintain keeps expired records from piling up until ctx ends: on
// MongoDB it makes the TTL index once. On FerretDB, which has no TTL
// monitor, the managers share two sweeps, each run by the one manager
// that takes its turn (store.Lease, in the collection
// Collection+"_lease"), within SweepTimeout: every interval, the records
// at the start of the collection's record order, which is the order of
// their claims (store.DeleteFirstBefore: a batch read when none has
// expired); every FullSweepEvery intervals, the whole collection (Sweep),
// for a record rewritten in place (a key taken over after its window)
// that holds older ones back. A sweep that times out pushes its next
// turn back for all of them. server tells which server the results live
// on.
func (k *Keys) Maintain(ctx context.Context, server func(context.Context) (store.Server, error), every time.Duration) {
	leases := k.coll.Database().Collection(Collection + "_lease")
	holder := token()
	first, full := store.NewLease(leases, "sweep", holder), store.NewLease(leases, "full sweep", holder)
	sweep := func(lease *store.Lease, every time.Duration, del func(context.Context) (int64, error)) error {
		var n int64
		_, err := lease.Run(ctx, every, SweepTimeout, func(ctx context.Context) (err error) {
			n, err = del(ctx)
			return err
		})
		if err == nil && n > 0 {
			k.opt.Logger.Debug("deleted expired Idempotency-Key records", "count", n)
		}
		return err
	}
	for {
		tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		s, err := server(tctx)
		cancel()
		switch {
		case err != nil:
		case s == store.MongoDB:
			k.byKey.Store(false)
			tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err = k.ensureTTL(tctx)
			cancel()
			if err == nil {
				k.opt.Logger.Info("Idempotency-Key records expire by a TTL index", "window", k.opt.Window.String())
				return
			}
		default:
			k.byKey.Store(true)
			err = errors.Join(
				sweep(first, every, func(ctx context.Context) (int64, error) {
					return store.DeleteFirstBefore(ctx, k.coll, "at", time.Now().Add(-k.opt.Window))
				}),
				sweep(full, FullSweepEvery*every, k.Sweep))
		}
		if err != nil && ctx.Err() == nil {
			k.opt.Logger.Warn("keeping the Idempotency-Key records failed; trying again later", "err", err)
		}
		t := time.NewTimer(every)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func token() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

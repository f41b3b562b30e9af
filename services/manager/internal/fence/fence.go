// Package fence keeps job ids from being used twice, by any number of
// managers, across restarts of any of them and of beanstalkd.
//
// A beanstalkd restarted without its binlog hands out ids from 1 again,
// while MongoDB still holds the results of the old jobs under those ids:
// GET /N/ would then answer a new job's status with an old job's result.
//
// What the fence guarantees, with one beanstalkd and N managers sharing
// one MongoDB: an id a POST answers with 201 was never handed out before,
// by any manager, and no worker can reserve the job before that is
// proven. When it cannot be proven (MongoDB or beanstalkd not answering)
// the POST is refused with 503 and Retry-After, and the job withdrawn.
//
// How: one small document in MongoDB (string _id, so one indexed read on
// devmongo too) holds
//   - hw, a high-water mark: every id any manager handed out is at most
//     hw. Managers raise it with $max a lease ahead of the ids they hand
//     out, in the background; a POST waits for MongoDB only when an id
//     comes back above the mark this manager knows (the lease ran out);
//   - server and floor: the beanstalkd process (its stats id and pid)
//     whose id counter was moved past hw, and the last id that used.
//
// Every queue connection the manager dials shows its beanstalkd process
// to OnConnect before it is used. A process not in the document is
// fenced in the background (GETs and probes go on; puts wait): one manager takes a lock in the document, moves beanstalkd's
// counter past hw with throwaway jobs (queue.Pool.Advance), and records
// the process; the other managers wait for the record. A restarted
// manager finds its beanstalkd recorded and spends nothing.
//
// Each job is put delayed (queue.Pool.PutHeld), its id checked against
// floor and hw, and only then kicked to ready, on the same connection:
// a put that cannot be worked before its id is checked. The first
// document, when there is none, starts hw at the largest stored result.
//
// What it costs: per POST a kick-job round trip to beanstalkd after the
// put (ingest measured in tools/loadgen/PERFORMANCE.md), and the job's
// stats show kicks: 1 and the hold as its delay. Per lease of ids, one
// $max write to MongoDB, off the request path unless the lease runs out.
// Per beanstalkd process restarted without its binlog, throwaway puts up
// to hw (measured: 3.4 s to move past 100,000 on a loaded 2-core
// machine), during which POSTs wait and may answer 503. A manager that
// dies between put and kick leaves its job delayed by Hold; it then runs
// without its poster having got an id.
//
// The document lives in the collection <MONGO_COLLECTION>_id_fence. It
// holds for one beanstalkd: managers pointed at different beanstalkds
// must not share it.
package fence

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/jobsys/jobs/pkg/queue"
)

// Tube is where the throwaway jobs go. No worker watches it.
const Tube = "_fence"

// Hold is how long a new job stays delayed if its manager dies before
// kicking it.
const Hold = 30 * time.Second

// DefaultLease is how far ahead of the ids handed out hw is kept.
const DefaultLease = 4096

// docID is the _id of the fence's document.
const docID = "job-ids"

// lockFor is how long a manager may move beanstalkd's counter before
// another may take over.
const lockFor = 30 * time.Second

// Queue is what the fence asks of beanstalkd; *queue.Pool has it.
type Queue interface {
	PutHeld(ctx context.Context, body []byte, o queue.PutOptions, hold time.Duration, check func(context.Context, uint64, string) error) (uint64, error)
	Advance(ctx context.Context, tube string, past uint64) (uint64, error)
	ServerStats(ctx context.Context) (map[string]string, error)
}

// Store tells the largest stored id; *store.Results has it.
type Store interface {
	MaxID(ctx context.Context) (uint64, error)
}

// ErrUnproven: the fence could not prove a job's id unused, or could not
// fence beanstalkd; the job was withdrawn. It wraps queue.ErrUnavailable,
// so the API answers 503.
var ErrUnproven = fmt.Errorf("%w: the job id fence cannot prove a fresh id (MongoDB or beanstalkd not answering)", queue.ErrUnavailable)

// mark is the shared document.
type mark struct {
	HW        uint64    `bson:"hw"`
	Server    string    `bson:"server"`
	Floor     uint64    `bson:"floor"`
	LockBy    string    `bson:"lock_by,omitempty"`
	LockUntil time.Time `bson:"lock_until,omitempty"`
}

// Fence puts jobs with ids no manager handed out before. It is safe for
// concurrent use.
type Fence struct {
	q    Queue
	s    Store
	coll *mongo.Collection
	log  *slog.Logger
	me   string
	// Lease is how far ahead of the ids handed out hw is kept (default
	// DefaultLease); set it before first use.
	Lease uint64

	hw     atomic.Uint64 // the shared hw as last seen; never above it
	issued atomic.Uint64 // the largest id this manager handed out
	floor  atomic.Uint64
	server atomic.Pointer[string] // the beanstalkd process known fenced

	mu      sync.Mutex // guards fencing
	fencing map[string]*flight
	raiseMu sync.Mutex    // one hw write at a time
	wake    chan struct{} // tells Watch to raise hw now
	// OnFence, when set, is called each time this manager moved a new
	// beanstalkd process's ids past hw, for metrics.
	OnFence func()
}

type flight struct {
	done chan struct{}
	err  error
}

// New returns a fence sharing its state through the document in coll.
func New(q Queue, s Store, coll *mongo.Collection, log *slog.Logger) *Fence {
	return &Fence{q: q, s: s, coll: coll, log: log, me: rand.Text(), Lease: DefaultLease, fencing: map[string]*flight{},
		wake: make(chan struct{}, 1)}
}

// Value is the high-water mark this manager knows: every id handed out
// so far is at or under the shared one, which is at least this.
func (f *Fence) Value() uint64 { return f.hw.Load() }

func raiseTo(v *atomic.Uint64, id uint64) {
	for {
		old := v.Load()
		if id <= old || v.CompareAndSwap(old, id) {
			return
		}
	}
}

// Put puts body and returns its id, proven never handed out before.
func (f *Fence) Put(ctx context.Context, body []byte, o queue.PutOptions) (uint64, error) {
	return f.q.PutHeld(ctx, body, o, Hold, f.check)
}

// check proves id fresh: from the fenced beanstalkd process, above its
// floor, and at or under hw, raising hw first when the lease ran out.
func (f *Fence) check(ctx context.Context, id uint64, process string) error {
	if err := f.fenced(ctx, process); err != nil {
		return fmt.Errorf("job %d: %w: %w", id, ErrUnproven, err)
	}
	if id <= f.floor.Load() {
		return fmt.Errorf("job %d: at or under the fenced floor %d: %w", id, f.floor.Load(), ErrUnproven)
	}
	if id > f.hw.Load() {
		if err := f.raise(ctx, id+f.Lease); err != nil {
			return fmt.Errorf("job %d: %w: raise the high-water mark: %w", id, ErrUnproven, err)
		}
	}
	raiseTo(&f.issued, id)
	if id+f.Lease/2 > f.hw.Load() {
		// Half the lease is left: Watch takes the next one now, so that
		// puts rarely wait for MongoDB.
		select {
		case f.wake <- struct{}{}:
		default:
		}
	}
	return nil
}

// raise makes the shared hw at least to, and learns its value.
func (f *Fence) raise(ctx context.Context, to uint64) error {
	f.raiseMu.Lock()
	defer f.raiseMu.Unlock()
	if to <= f.hw.Load() {
		return nil
	}
	var m mark
	err := f.coll.FindOneAndUpdate(ctx, bson.D{{Key: "_id", Value: docID}}, bson.D{{Key: "$max", Value: bson.D{{Key: "hw", Value: int64(to)}}}},
		options.FindOneAndUpdate().SetReturnDocument(options.After)).Decode(&m)
	if err != nil {
		return err
	}
	raiseTo(&f.hw, m.HW)
	return nil
}

// load reads the document, making it first when there is none, with hw
// at the largest stored result.
func (f *Fence) load(ctx context.Context) (mark, error) {
	var m mark
	err := f.coll.FindOne(ctx, bson.D{{Key: "_id", Value: docID}}).Decode(&m)
	if !errors.Is(err, mongo.ErrNoDocuments) {
		return m, err
	}
	stored, err := f.s.MaxID(ctx)
	if err != nil {
		return m, fmt.Errorf("read the largest stored id: %w", err)
	}
	_, err = f.coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: docID}}, bson.D{
		{Key: "$max", Value: bson.D{{Key: "hw", Value: int64(stored)}}},
		{Key: "$setOnInsert", Value: bson.D{{Key: "server", Value: ""}, {Key: "floor", Value: int64(0)}}},
	}, options.UpdateOne().SetUpsert(true))
	if err != nil {
		return m, err
	}
	err = f.coll.FindOne(ctx, bson.D{{Key: "_id", Value: docID}}).Decode(&m)
	return m, err
}

// OnConnect is the queue pool's hook for each new connection (set it
// with queue.Pool.SetOnConnect). A connection to a beanstalkd process
// that is not fenced starts fencing it in the background, and is used at
// once for everything but puts: PutHeld's check waits for the fencing.
func (f *Fence) OnConnect(_ context.Context, stats map[string]string) error {
	f.start(queue.Process(stats), stats)
	return nil
}

// start begins fencing process unless it is fenced or being fenced, and
// returns the fencing under way, or nil.
func (f *Fence) start(process string, stats map[string]string) *flight {
	if s := f.server.Load(); s != nil && *s == process {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if fl, ok := f.fencing[process]; ok {
		return fl
	}
	fl := &flight{done: make(chan struct{})}
	f.fencing[process] = fl
	go func() {
		fctx, cancel := context.WithTimeout(context.Background(), 2*lockFor)
		fl.err = f.fence(fctx, process, stats)
		cancel()
		if fl.err != nil {
			f.log.Warn("could not fence beanstalkd's job ids; POST answers 503 until it can", "server", process, "err", fl.err)
		}
		f.mu.Lock()
		delete(f.fencing, process)
		f.mu.Unlock()
		close(fl.done)
	}()
	return fl
}

// fenced waits until process is the fenced beanstalkd process.
func (f *Fence) fenced(ctx context.Context, process string) error {
	if process == "" {
		return errors.New("the connection's beanstalkd process is unknown: set the fence as the pool's OnConnect")
	}
	fl := f.start(process, nil)
	if fl == nil {
		return nil
	}
	select {
	case <-fl.done:
		if s := f.server.Load(); fl.err == nil && s != nil && *s == process {
			return nil
		}
		return fmt.Errorf("beanstalkd %s is not fenced: %w", process, fl.err)
	case <-ctx.Done():
		return fmt.Errorf("still fencing beanstalkd: %w", ctx.Err())
	}
}

// fence records server as fenced: at once when another manager did it,
// else by moving its counter past hw under the document's lock.
func (f *Fence) fence(ctx context.Context, server string, stats map[string]string) error {
	filter := bson.D{{Key: "_id", Value: docID}}
	for {
		m, err := f.load(ctx)
		if err != nil {
			return fmt.Errorf("read the job id fence: %w", err)
		}
		raiseTo(&f.hw, m.HW)
		if m.Server == server {
			f.adopt(m)
			return nil
		}
		now := time.Now()
		res, err := f.coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: docID}, {Key: "$or", Value: bson.A{
			bson.D{{Key: "lock_by", Value: bson.D{{Key: "$exists", Value: false}}}},
			bson.D{{Key: "lock_until", Value: bson.D{{Key: "$lt", Value: now}}}},
			bson.D{{Key: "lock_by", Value: f.me}},
		}}}, bson.D{{Key: "$set", Value: bson.D{{Key: "lock_by", Value: f.me}, {Key: "lock_until", Value: now.Add(lockFor)}}}})
		if err != nil {
			return fmt.Errorf("lock the job id fence: %w", err)
		}
		if res.MatchedCount == 0 {
			// Another manager is moving beanstalkd's ids: wait for it.
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		if err := f.advance(ctx, filter, server, stats); err != nil {
			return err
		}
	}
}

// advance moves server's counter past hw and records it; the caller holds
// the lock (re-read hw under it, for a manager may have raised it).
func (f *Fence) advance(ctx context.Context, filter bson.D, server string, stats map[string]string) error {
	var m mark
	if err := f.coll.FindOne(ctx, filter).Decode(&m); err != nil {
		return fmt.Errorf("read the job id fence: %w", err)
	}
	if m.Server == server {
		// Another manager fenced it between our read and our lock.
		_, err := f.coll.UpdateOne(ctx, append(filter, bson.E{Key: "lock_by", Value: f.me}),
			bson.D{{Key: "$unset", Value: bson.D{{Key: "lock_by", Value: ""}, {Key: "lock_until", Value: ""}}}})
		return err
	}
	start := time.Now()
	past := max(m.HW, f.hw.Load(), f.issued.Load())
	// Every job beanstalkd made had a fresh id, so its next id is above
	// total-jobs: when that is past hw already (a fresh system, a restart
	// with binlog) no throwaway job is needed.
	last, err := strconv.ParseUint(stats["total-jobs"], 10, 64)
	moved := err != nil || last < past
	if moved {
		last, err = f.q.Advance(ctx, Tube, past)
		if err != nil {
			return fmt.Errorf("move beanstalkd's ids past %d: %w", past, err)
		}
	}
	_, err = f.coll.UpdateOne(ctx, append(filter, bson.E{Key: "lock_by", Value: f.me}), bson.D{
		{Key: "$set", Value: bson.D{{Key: "server", Value: server}, {Key: "floor", Value: int64(last)}}},
		{Key: "$max", Value: bson.D{{Key: "hw", Value: int64(last + f.Lease)}}},
		{Key: "$unset", Value: bson.D{{Key: "lock_by", Value: ""}, {Key: "lock_until", Value: ""}}},
	})
	if err != nil {
		return fmt.Errorf("record the fenced beanstalkd: %w", err)
	}
	if !moved {
		f.log.Info("beanstalkd is a new process, its ids already past every id handed out", "server", server, "fence", past, "job_id", last)
		return nil // the loop reads the record back
	}
	f.log.Warn("beanstalkd is a new process: moved its ids past every id handed out", "server", server,
		"fence", past, "job_id", last, "duration_ms", time.Since(start).Milliseconds())
	if f.OnFence != nil {
		f.OnFence()
	}
	return nil
}

func (f *Fence) adopt(m mark) {
	raiseTo(&f.hw, m.HW)
	f.floor.Store(m.Floor)
	f.server.Store(&m.Server)
}

// Sync fences the beanstalkd process the pool reaches now, waiting for
// it, and keeps hw a lease ahead of the ids handed out. The manager calls
// it before it serves, and Watch at every tick.
func (f *Fence) Sync(ctx context.Context) (map[string]string, error) {
	stats, err := f.q.ServerStats(ctx)
	if err != nil {
		return nil, err
	}
	if err := f.fenced(ctx, queue.Process(stats)); err != nil {
		return stats, err
	}
	if issued := f.issued.Load(); issued+f.Lease/2 > f.hw.Load() {
		return stats, f.raise(ctx, issued+f.Lease)
	}
	return stats, nil
}

// WatchOptions configure Watch.
type WatchOptions struct {
	// Every is the time between checks (default 1s).
	Every time.Duration
	// OnDown is called when beanstalkd stops answering.
	OnDown func()
	// OnUp is called with beanstalkd's stats when it answers again or
	// answers as a new process.
	OnUp func(stats map[string]string)
}

// Watch checks beanstalkd every o.Every until ctx ends, so that a new
// beanstalkd process is fenced before the first POST needs it, and keeps
// hw a lease ahead of the ids this manager handed out.
func (f *Fence) Watch(ctx context.Context, o WatchOptions) {
	if o.Every <= 0 {
		o.Every = time.Second
	}
	t := time.NewTicker(o.Every)
	defer t.Stop()
	down, server := false, ""
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*lockFor)
		stats, err := f.Sync(cctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			if !down {
				f.log.Warn("beanstalkd or the job id fence is not answering; POST answers 503 until it does", "err", err)
				if o.OnDown != nil {
					o.OnDown()
				}
			}
			down = true
		default:
			id := stats["id"] + "/" + stats["pid"]
			if down || (server != "" && id != server) {
				f.log.Info("beanstalkd answers again", "restarted", server != "" && id != server)
				if o.OnUp != nil {
					o.OnUp(stats)
				}
			}
			down, server = false, id
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-f.wake:
		}
	}
}

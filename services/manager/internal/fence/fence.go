// Package fence keeps job ids from being used twice.
//
// A beanstalkd restarted without its binlog hands out ids from 1 again,
// while MongoDB still holds the results of the old jobs under those ids:
// GET /N would then answer a new job's status with an old job's result.
// The fence is the largest id known to be taken when the fence was last
// synced: the larger of the largest stored result and the largest id
// beanstalkd had given this manager. A put that comes back at or under it
// is withdrawn, beanstalkd's counter is moved past every id known to be
// taken with throwaway jobs in a private tube, and the job is put again.
//
// The fence is a snapshot, not the running maximum of issued ids: puts on
// different connections finish out of order, so an id below the largest
// issued one is normal and says nothing about a restart.
package fence

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jobsys/jobs/pkg/queue"
)

// Tube is where the throwaway jobs go. No worker watches it.
const Tube = "_fence"

// Queue is what the fence asks of beanstalkd; *queue.Pool has it.
type Queue interface {
	Put(ctx context.Context, body []byte, o queue.PutOptions) (uint64, error)
	Delete(ctx context.Context, id uint64) error
	Advance(ctx context.Context, tube string, past uint64) (uint64, error)
	ServerStats(ctx context.Context) (map[string]string, error)
}

// Store tells the largest stored id; *store.Results has it.
type Store interface {
	MaxID(ctx context.Context) (uint64, error)
}

// Fence puts jobs with ids above every id known to be taken. It is safe
// for concurrent use.
type Fence struct {
	q   Queue
	s   Store
	log *slog.Logger

	fence atomic.Uint64
	// issued is the largest id beanstalkd has given this manager.
	issued atomic.Uint64
	// mu lets one caller at a time move beanstalkd's counter.
	mu sync.Mutex
	// server is the "id/pid" of the beanstalkd process last connected to.
	serverMu sync.Mutex
	server   string
	// OnFence, when set, is called each time a put came back under the
	// fence, for metrics.
	OnFence func()
}

// New returns a fence with nothing known yet; call Sync to read the
// stored results.
func New(q Queue, s Store, log *slog.Logger) *Fence {
	return &Fence{q: q, s: s, log: log}
}

// Value is the fence: the largest id known to be taken.
func (f *Fence) Value() uint64 { return f.fence.Load() }

// raise makes the fence at least id.
func (f *Fence) raise(id uint64) { raiseTo(&f.fence, id) }

func raiseTo(v *atomic.Uint64, id uint64) {
	for {
		old := v.Load()
		if id <= old || v.CompareAndSwap(old, id) {
			return
		}
	}
}

// maxAttempts bounds the puts of one job: more than one means beanstalkd
// was restarted again while the fence moved it on.
const maxAttempts = 3

// ErrFenced means the job could not be given a fresh id.
var ErrFenced = errors.New("beanstalkd keeps handing out ids that are already taken")

// Put puts body and returns its id, which is above every id known to be
// taken.
func (f *Fence) Put(ctx context.Context, body []byte, o queue.PutOptions) (uint64, error) {
	for range maxAttempts {
		id, err := f.q.Put(ctx, body, o)
		if err != nil {
			return 0, err
		}
		fence := f.Value()
		if id > fence {
			raiseTo(&f.issued, id)
			return id, nil
		}
		f.log.Warn("beanstalkd gave out an id at or under the fence; it was restarted without its binlog: moving its ids past the fence",
			"job_id", id, "fence", fence, "tube", o.Tube)
		if f.OnFence != nil {
			f.OnFence()
		}
		if err := f.q.Delete(ctx, id); err != nil {
			// A worker reserved it already: its result will collide with
			// the stored one, which the store never overwrites.
			f.log.Error("could not withdraw the job with a reused id", "job_id", id, "tube", o.Tube, "err", err)
		}
		if err := f.advance(ctx); err != nil {
			return 0, err
		}
	}
	return 0, fmt.Errorf("put job in tube %q: %w", o.Tube, ErrFenced)
}

// advance moves beanstalkd's counter past the fence.
func (f *Fence) advance(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.raise(f.issued.Load())
	past := f.Value()
	start := time.Now()
	last, err := f.q.Advance(ctx, Tube, past)
	if err != nil {
		return fmt.Errorf("move beanstalkd's ids past %d: %w", past, err)
	}
	f.raise(last)
	if took := time.Since(start); took > 100*time.Millisecond {
		f.log.Info("moved beanstalkd's ids past the fence", "fence", past, "job_id", last, "duration_ms", took.Milliseconds())
	}
	return nil
}

// Sync raises the fence to the largest stored result and then makes sure
// beanstalkd's next id is above it. Call it at start and whenever
// beanstalkd comes back after an outage.
func (f *Fence) Sync(ctx context.Context) error {
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	max, err := f.s.MaxID(sctx)
	cancel()
	if err != nil {
		return fmt.Errorf("read the largest stored id: %w", err)
	}
	f.raise(max)
	f.raise(f.issued.Load())
	// beanstalkd gives every job a fresh id, so its next id is above the
	// number of jobs it has made; when that is above the fence already,
	// no throwaway job (and no id) is spent.
	if stats, err := f.q.ServerStats(ctx); err == nil {
		f.serverMu.Lock()
		f.server = stats["id"] + "/" + stats["pid"]
		f.serverMu.Unlock()
		if made, err := strconv.ParseUint(stats["total-jobs"], 10, 64); err == nil && made >= f.Value() {
			return nil
		}
	}
	return f.advance(ctx)
}

// OnConnect is the queue pool's hook for each new connection (set it
// with queue.Pool.SetOnConnect). A new connection after a restart is the
// first thing that sees the new process, before any put on it: when the
// process differs from the last one, the fence is raised to every id
// handed out so far and beanstalkd's counter is moved past it before the
// connection is used.
func (f *Fence) OnConnect(ctx context.Context, stats map[string]string) error {
	server := stats["id"] + "/" + stats["pid"]
	f.serverMu.Lock()
	prev := f.server
	f.server = server
	f.serverMu.Unlock()
	if prev == "" || prev == server {
		return nil
	}
	// Raised at once, without I/O, so that puts on other new connections
	// see the restart even before the sync below is done.
	f.raise(f.issued.Load())
	f.log.Warn("beanstalkd restarted: moving its ids past every id known to be taken", "fence", f.Value())
	return f.Sync(ctx)
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
	// Synced says the caller has synced the fence already.
	Synced bool
}

// Watch checks beanstalkd every o.Every until ctx ends. When it comes back
// after an outage, or comes back as a new process, Watch syncs the fence;
// a sync that fails is tried again at the next check. The first check
// syncs too, unless o.Synced.
func (f *Fence) Watch(ctx context.Context, o WatchOptions) {
	if o.Every <= 0 {
		o.Every = time.Second
	}
	t := time.NewTicker(o.Every)
	defer t.Stop()
	down, synced, server := false, o.Synced, ""
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		stats, err := f.q.ServerStats(cctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			if !down {
				f.log.Warn("beanstalkd is not answering; POST and GET answer 503 until it does", "err", err)
				if o.OnDown != nil {
					o.OnDown()
				}
			}
			down = true
		default:
			id := stats["id"] + "/" + stats["pid"]
			if down || (server != "" && id != server) {
				f.log.Info("beanstalkd answers again", "restarted", server != "" && id != server)
				synced = false
				if o.OnUp != nil {
					o.OnUp(stats)
				}
			}
			down, server = false, id
			if !synced {
				if err := f.Sync(ctx); err != nil {
					if ctx.Err() != nil {
						return
					}
					f.log.Warn("could not sync the job id fence; trying again", "err", err)
				} else {
					synced = true
					f.log.Debug("job id fence synced", "fence", f.Value())
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Package worker is the reserve loop: reservers that take jobs from
// beanstalkd, run their handler while keeping the reservation alive, store
// the result and only then delete the job, and release or bury the jobs
// that fail, with exponential backoff.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/queue"
	"github.com/jobsys/jobs/pkg/store"

	"github.com/jobsys/jobs/services/worker/internal/handler"
)

// ResultStore keeps results. Save never overwrites: it returns an error
// matching store.ErrAlreadyStored when the same job's result is stored and
// store.ErrConflict when a different one is.
type ResultStore interface {
	Save(ctx context.Context, r job.Result) error
	Find(ctx context.Context, id uint64) (job.Result, error)
}

var _ ResultStore = (*store.Results)(nil)

// FailureStore keeps the record of each job's last failed attempt.
type FailureStore interface {
	Record(ctx context.Context, f job.Failure) error
	Remove(ctx context.Context, id uint64) error
}

var _ FailureStore = (*store.Failures)(nil)

// Handlers picks the handler for a tube.
type Handlers interface {
	For(tube string) handler.Handler
}

var _ Handlers = (*handler.Mux)(nil)

// The loop's timings, and how much of a payload a log line shows.
const (
	// reserveWait is how long one reserve waits before the loop looks at
	// its context again.
	reserveWait = time.Second
	// cmdTimeout bounds every other beanstalkd command.
	cmdTimeout = 2 * time.Second
	// reconnectMin and reconnectMax bound the wait between reserves while
	// beanstalkd is unreachable.
	reconnectMin = 100 * time.Millisecond
	reconnectMax = 2 * time.Second
	// minTouch is the shortest interval between touches.
	minTouch = 500 * time.Millisecond
	// logPayloadMax is how much of a payload an error log shows.
	logPayloadMax = 200
)

// ErrGraceOver is the cause of a handler's cancellation when the shutdown
// grace runs out.
var ErrGraceOver = errors.New("shutdown grace period is over")

// Config is what a Worker needs.
type Config struct {
	// Addr is beanstalkd's host:port.
	Addr string
	// Tubes are watched by every reserver.
	Tubes []string
	// Concurrency is the number of reservers, each with its own connection.
	Concurrency int
	// MaxAttempts is the delivery after which a job whose handler fails is
	// buried instead of released.
	MaxAttempts int
	// Retry is the release backoff.
	Retry Backoff
	// ShutdownGrace is how long in-flight jobs may still run once Run's
	// context is cancelled.
	ShutdownGrace time.Duration
	// WorkerID is stored in every result.
	WorkerID string
	// SaveTimeout bounds one result write (default 10s).
	SaveTimeout time.Duration

	Handlers Handlers
	Store    ResultStore
	// Failures, when set, gets a record of every failed attempt.
	Failures FailureStore
	Metrics  *Metrics
	Logger   *slog.Logger
}

// Worker runs the reservers.
type Worker struct {
	cfg         Config
	log         *slog.Logger
	m           *Metrics
	queueOutage *outage
	storeOutage *outage
}

// New returns a Worker for cfg.
func New(cfg Config) *Worker {
	cfg.Concurrency = max(cfg.Concurrency, 1)
	cfg.MaxAttempts = max(cfg.MaxAttempts, 1)
	if cfg.SaveTimeout <= 0 {
		cfg.SaveTimeout = 10 * time.Second
	}
	return &Worker{
		cfg:         cfg,
		log:         cfg.Logger,
		m:           cfg.Metrics,
		queueOutage: newOutage(cfg.Logger.With("addr", cfg.Addr), "beanstalkd"),
		storeOutage: newOutage(cfg.Logger, "MongoDB"),
	}
}

// Run reserves and works jobs until ctx is cancelled. Then it stops
// reserving, lets the jobs in flight finish within the shutdown grace,
// releases those that do not (with no delay, so another worker takes them
// at once), closes its connections and returns nil.
func (w *Worker) Run(ctx context.Context) error {
	// Handlers run under workCtx, which outlives ctx by the grace.
	workCtx, cancelWork := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancelWork(nil)
	finished := make(chan struct{})
	var timer sync.WaitGroup
	timer.Go(func() {
		select {
		case <-finished:
			return
		case <-ctx.Done():
		}
		w.log.Info("stopping: no more reserves; waiting for jobs in flight", "grace", w.cfg.ShutdownGrace.String())
		t := time.NewTimer(w.cfg.ShutdownGrace)
		defer t.Stop()
		select {
		case <-finished:
		case <-t.C:
			cancelWork(ErrGraceOver)
		}
	})

	var reservers sync.WaitGroup
	for i := range w.cfg.Concurrency {
		reservers.Go(func() { w.reserver(ctx, workCtx, i+1) })
	}
	reservers.Wait()
	close(finished)
	timer.Wait()
	return nil
}

// reserver is one reserve loop on its own connection.
func (w *Worker) reserver(ctx, workCtx context.Context, n int) {
	log := w.log.With("reserver", n)
	c := queue.NewConsumer(w.cfg.Addr, w.cfg.Tubes, cmdTimeout)
	defer c.Close()
	// pending is the last job worked, stored and waiting for its delete,
	// which DeleteAndReserve makes just before the next reserve.
	var pending *stored
	defer func() {
		if pending != nil { // stopping: no next reserve to carry it
			w.deleted(pending, w.finishOp(pending.log, "delete", func(fctx context.Context) error { return c.Delete(fctx, pending.r.ID) }))
		}
	}()
	wait := reconnectMin
	for ctx.Err() == nil {
		var r queue.Reserved
		var err error
		if s := pending; s != nil {
			pending = nil
			r, err = c.DeleteAndReserve(ctx, s.r.ID, reserveWait, func(err error) {
				if err != nil {
					s.log.Warn("delete failed; beanstalkd will hand the job out again", "err", err)
				}
				w.deleted(s, err)
			})
		} else {
			r, err = c.Reserve(ctx, reserveWait)
		}
		switch {
		case err == nil:
		case errors.Is(err, queue.ErrNoJob):
			w.queueOutage.ok()
			wait = reconnectMin
			continue
		case ctx.Err() != nil:
			return
		default:
			if r.ID != 0 {
				// Reserved, but stats-job failed: without the tube the
				// handler is unknown. Hand the job back for another try.
				log.Warn("reserved job without its stats; releasing it", "job_id", r.ID, "err", err)
				w.finishOp(log, "release", func(fctx context.Context) error { return c.Release(fctx, r.ID, r.Priority, 0) })
			}
			if errors.Is(err, queue.ErrUnavailable) {
				w.queueOutage.fail(err)
			} else if r.ID == 0 {
				log.Error("reserve failed", "err", err)
			}
			sleep(ctx, wait)
			wait = min(wait*2, reconnectMax)
			continue
		}
		w.queueOutage.ok()
		wait = reconnectMin
		if ctx.Err() != nil {
			// Reserved just as the shutdown began: give it straight back.
			log.Info("job reserved as the shutdown began; handing it back unworked", "job_id", r.ID)
			w.release(log, c, r, 0, ReasonShutdown)
			return
		}
		pending = w.process(workCtx, c, r, log)
	}
}

// stored is a job whose result is stored and that waits for its delete.
type stored struct {
	r       queue.Reserved
	o       outcome
	started time.Time
	log     *slog.Logger
}

// deleted records a stored job's delete, err being its outcome (logged
// by the caller). A job not deleted is redelivered later and recognised as
// stored.
func (w *Worker) deleted(s *stored, err error) {
	if err != nil {
		return
	}
	w.m.Done.WithLabelValues(s.r.Tube).Inc()
	w.m.Duration.WithLabelValues(s.r.Tube).Observe(time.Since(s.started).Seconds())
	if attempt(s.r) > 1 {
		w.forgetFailure(s.log, s.r)
	}
	if s.o.storeErr == nil {
		if s.o.result.Hash != "" {
			s.log.Info("job done", "hash", s.o.result.Hash, "duration_ms", s.o.result.DurationMS)
		} else {
			s.log.Info("job done", "duration_ms", s.o.result.DurationMS)
		}
	}
}

// outcome is what the work goroutine reports.
type outcome struct {
	result     job.Result
	handlerErr error
	storeErr   error
}

// attempt is which run of r this is, counting the runs that a worker
// finished: releases, buries and TTR timeouts before this delivery, plus
// this one. beanstalkd's reserve count is no measure of that: a reserve
// whose connection is gone (a worker gave up on a frozen beanstalkd)
// counts, though nobody ran the job.
func attempt(r queue.Reserved) int {
	return int(1 + r.Releases + r.Buries + r.Timeouts)
}

// process works one reserved job and finishes it: release or bury it, or,
// once its result is stored, return it for the caller to delete.
//
// The handler and the result write run on this goroutine (a hand-off to
// another one cost about a tenth of a job's time in a drain). Meanwhile
// the connection, which is not safe for concurrent use, is this
// goroutine's to lend: a timer touches the job to keep the reservation
// alive, and the end of ctx (the shutdown grace is over) hands the job
// back at once, so another worker can start it without waiting for the
// handler to notice. mu keeps the two apart, and this goroutine takes the
// connection back under mu when the handler returns.
func (w *Worker) process(ctx context.Context, c *queue.Consumer, r queue.Reserved, log *slog.Logger) *stored {
	log = log.With("job_id", r.ID, "tube", r.Tube, "attempt", attempt(r))
	w.m.InFlight.Inc()
	defer w.m.InFlight.Dec()
	started := time.Now()

	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu         sync.Mutex
		returned   bool // the handler has returned: the connection is back
		handedBack bool // released at the end of the grace
	)
	every := max(r.TTR/2, minTouch)
	var touch *time.Timer
	mu.Lock() // the timer's function reads touch under mu
	touch = time.AfterFunc(every, func() {
		mu.Lock()
		defer mu.Unlock()
		if returned || handedBack {
			return
		}
		w.finishOp(log, "touch", func(fctx context.Context) error { return c.Touch(fctx, r.ID) })
		touch.Reset(every)
	})
	mu.Unlock()
	stopHandBack := context.AfterFunc(ctx, func() {
		mu.Lock()
		if !returned {
			handedBack = true
			w.releaseUnfinished(log, c, r)
		}
		mu.Unlock()
		cancel()
	})
	o := w.work(hctx, r, started)
	mu.Lock()
	returned = true
	mu.Unlock()
	touch.Stop()
	stopHandBack()
	if handedBack {
		return nil // a result written meanwhile is found by the next worker's Save
	}
	return w.finish(ctx, c, r, o, started, log)
}

// work runs the handler and stores its result.
func (w *Worker) work(ctx context.Context, r queue.Reserved, started time.Time) (o outcome) {
	defer func() {
		if p := recover(); p != nil {
			o = outcome{handlerErr: fmt.Errorf("handler panicked: %v", p)}
		}
	}()
	h := w.cfg.Handlers.For(r.Tube)
	res, err := h.Handle(ctx, handler.Job{ID: r.ID, Tube: r.Tube, Body: r.Body, Attempt: attempt(r), TTR: r.TTR})
	if err != nil {
		return outcome{handlerErr: err}
	}
	completed := time.Now()
	result := job.Result{
		ID:             r.ID,
		Hash:           res.Hash,
		Payload:        string(r.Body),
		Result:         res.Result,
		ResultEncoding: res.ResultEncoding,
		Tube:           r.Tube,
		Worker:         w.cfg.WorkerID,
		Attempts:       attempt(r),
		StartedAt:      started.UTC().Truncate(time.Millisecond),
		CompletedAt:    completed.UTC().Truncate(time.Millisecond),
		DurationMS:     float64(completed.Sub(started).Microseconds()) / 1000,
	}
	sctx, cancel := context.WithTimeout(ctx, w.cfg.SaveTimeout)
	defer cancel()
	return outcome{result: result, storeErr: w.cfg.Store.Save(sctx, result)}
}

// finish acts on the outcome: it releases or buries a job, or returns one
// whose result is stored, for the caller to delete. The result is stored
// before the job is deleted, so a crash in between only redelivers a job
// whose result Save then recognises.
func (w *Worker) finish(ctx context.Context, c *queue.Consumer, r queue.Reserved, o outcome, started time.Time, log *slog.Logger) *stored {
	shuttingDown := ctx.Err() != nil
	switch {
	case o.handlerErr != nil && shuttingDown:
		w.releaseUnfinished(log, c, r)

	case o.handlerErr != nil:
		w.m.Failed.WithLabelValues(r.Tube).Inc()
		if errors.Is(o.handlerErr, handler.ErrSkipRetry) {
			log.Error("handler failed and asked for no retry; burying job", "err", o.handlerErr)
			w.bury(log, c, r, ReasonSkipRetry)
			w.recordFailure(log, r, job.FailureBuried, o.handlerErr)
			return nil
		}
		if attempt(r) >= w.cfg.MaxAttempts {
			log.Error("handler failed on the last attempt; burying job", "err", o.handlerErr, "max_attempts", w.cfg.MaxAttempts)
			w.bury(log, c, r, ReasonMaxAttempts)
			w.recordFailure(log, r, job.FailureBuried, o.handlerErr)
			return nil
		}
		d := w.cfg.Retry.Jittered(attempt(r))
		log.Warn("handler failed; releasing job for a retry", "err", o.handlerErr, "delay", d.String(), "max_attempts", w.cfg.MaxAttempts)
		w.release(log, c, r, d, ReasonHandlerFailed)
		w.recordFailure(log, r, job.FailureRetrying, o.handlerErr)

	case o.storeErr == nil, errors.Is(o.storeErr, store.ErrAlreadyStored):
		w.storeOutage.ok()
		if o.storeErr != nil {
			log.Info("result already stored (job redelivered); deleting job")
		}
		return &stored{r: r, o: o, started: started, log: log}

	case errors.Is(o.storeErr, store.ErrConflict):
		w.storeOutage.ok()
		attrs := []any{"err", o.storeErr, "new_hash", o.result.Hash, "new_payload", clip(o.result.Payload)}
		fctx, cancel := context.WithTimeout(context.Background(), w.cfg.SaveTimeout)
		if old, err := w.cfg.Store.Find(fctx, r.ID); err == nil {
			attrs = append(attrs, "stored_hash", old.Hash, "stored_payload", clip(old.Payload),
				"stored_worker", old.Worker, "stored_completed_at", old.CompletedAt)
		}
		cancel()
		log.Error("a different result is stored under this job id (beanstalkd restarted without binlog and reused ids?); "+
			"never overwriting it: burying job", attrs...)
		w.bury(log, c, r, ReasonConflict)
		w.recordFailure(log, r, job.FailureBuried, o.storeErr)

	case shuttingDown:
		w.releaseUnfinished(log, c, r)

	default:
		// Infrastructure failure: retried for as long as it lasts and never
		// buried, whatever the attempt count.
		reason := ReasonStoreError
		if store.IsUnavailable(o.storeErr) {
			reason = ReasonStoreUnavailable
			w.storeOutage.fail(o.storeErr)
		} else {
			log.Error("storing result failed; releasing job for a retry", "err", o.storeErr)
		}
		// The reserve count grows with every outage retry, so the handler's
		// backoff would park jobs for up to its maximum once the database
		// is back; an outage retry waits a few seconds at most instead.
		d := min(w.cfg.Retry.Jittered(attempt(r)), maxStoreRetryDelay)
		log.Debug("result not stored; releasing job", "err", o.storeErr, "delay", d.String())
		w.release(log, c, r, d, reason)
	}
	return nil
}

// maxErrorText bounds a failure record's error text.
const maxErrorText = 8 << 10

// recordFailure writes r's failure record once the job is released or
// buried: never while the worker holds the reservation, which is no
// longer touched, so a slow MongoDB cannot make it time out. A failed
// write is logged and the job goes on: the record is what operators
// read, the job is what must not be lost.
func (w *Worker) recordFailure(log *slog.Logger, r queue.Reserved, state job.FailureState, cause error) {
	if w.cfg.Failures == nil {
		return
	}
	text := strings.ToValidUTF8(cause.Error(), "\uFFFD")
	if len(text) > maxErrorText {
		text = strings.ToValidUTF8(text[:maxErrorText], "") + "…"
	}
	f := job.Failure{ID: r.ID, Tube: r.Tube, State: state, Payload: string(r.Body), Error: text,
		Attempts: attempt(r), Worker: w.cfg.WorkerID, FailedAt: time.Now()}
	ctx, cancel := context.WithTimeout(context.Background(), w.cfg.SaveTimeout)
	defer cancel()
	if err := w.cfg.Failures.Record(ctx, f); err != nil {
		log.Warn("writing the failure record failed", "err", err)
	}
}

// forgetFailure removes the failure record of a job that completed, and
// was deleted, after an earlier delivery; a job on its first run has
// none, so a drain of healthy jobs writes nothing here.
func (w *Worker) forgetFailure(log *slog.Logger, r queue.Reserved) {
	if w.cfg.Failures == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), w.cfg.SaveTimeout)
	defer cancel()
	if err := w.cfg.Failures.Remove(ctx, r.ID); err != nil {
		log.Warn("removing the failure record of a completed job failed", "err", err)
	}
}

// releaseUnfinished hands back a job cut short by the end of the shutdown
// grace, with no delay, so another worker takes it at once.
// maxStoreRetryDelay caps the release delay after a failure to store a
// result, so results appear within seconds of the database's return.
const maxStoreRetryDelay = 5 * time.Second

func (w *Worker) releaseUnfinished(log *slog.Logger, c *queue.Consumer, r queue.Reserved) {
	log.Warn("shutdown grace over; releasing job in flight", "grace", w.cfg.ShutdownGrace.String())
	w.release(log, c, r, 0, ReasonShutdown)
}

func (w *Worker) release(log *slog.Logger, c *queue.Consumer, r queue.Reserved, delay time.Duration, reason string) {
	err := w.finishOp(log, "release", func(fctx context.Context) error { return c.Release(fctx, r.ID, r.Priority, delay) })
	if err == nil {
		w.m.Released.WithLabelValues(r.Tube, reason).Inc()
	}
}

func (w *Worker) bury(log *slog.Logger, c *queue.Consumer, r queue.Reserved, reason string) {
	err := w.finishOp(log, "bury", func(fctx context.Context) error { return c.Bury(fctx, r.ID, r.Priority) })
	if err == nil {
		w.m.Buried.WithLabelValues(r.Tube, reason).Inc()
	}
}

// finishOp runs a command on a reserved job. It is not bound to the
// worker's contexts: a job must be finished even during shutdown. A
// failure is logged; beanstalkd hands the job out again after its TTR or
// when the connection closes, so nothing is lost.
func (w *Worker) finishOp(log *slog.Logger, op string, f func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	err := f(ctx)
	if err != nil {
		log.Warn(op+" failed; beanstalkd will hand the job out again", "err", err)
	}
	return err
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func clip(s string) string {
	if len(s) <= logPayloadMax {
		return s
	}
	return s[:logPayloadMax] + "…"
}

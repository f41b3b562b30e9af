package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/queue"
	"github.com/jobsys/jobs/pkg/store"
)

// Created is the answer to a POST.
type Created struct {
	ID    uint64    `json:"id"`
	Tube  string    `json:"tube"`
	State job.State `json:"state"`
}

// post adds the request's JSON body as one job, whatever the path. With
// an Idempotency-Key it adds it at most once: see putOnce.
func (h *handler) post(c echo.Context) error {
	req := c.Request()
	query, err := url.ParseQuery(req.URL.RawQuery)
	if err != nil {
		return errorf(http.StatusBadRequest, "query string does not parse: %s", err.Error())
	}
	key, err := h.idempotencyKey(req.Header)
	if err != nil {
		return err
	}
	body, err := h.readBody(c, h.rawLimit(), h.rawTooBig)
	if err != nil {
		return err
	}
	p, err := ParsePut(body, query, PutLimits{MaxJobSize: h.cfg.MaxJobSize, DefaultTTR: h.cfg.DefaultTTR})
	if err != nil {
		return err
	}
	var created Created
	if key != "" {
		var replayed bool
		created, replayed, err = h.putOnce(req.Context(), key, p)
		if err == nil && replayed {
			c.Response().Header().Set(echo.HeaderLocation, "/"+strconv.FormatUint(created.ID, 10)+"/")
			c.Response().Header().Set(headerReplayed, "true")
			return writeJSON(c, http.StatusOK, created)
		}
	} else {
		created, err = h.put(req.Context(), p)
	}
	if err != nil {
		return err
	}
	h.metrics.enqueued(p.Tube)
	h.log.Debug("job added", "job_id", created.ID, "tube", p.Tube, "bytes", len(p.Body))
	c.Response().Header().Set(echo.HeaderLocation, "/"+strconv.FormatUint(created.ID, 10)+"/")
	return writeJSON(c, http.StatusCreated, created)
}

// put puts p on beanstalkd. Its 503s say whether the job may exist.
func (h *handler) put(ctx context.Context, p PutRequest) (Created, error) {
	id, err := h.enq.Put(ctx, p.Body, queue.PutOptions{Tube: p.Tube, Priority: p.Priority, Delay: p.Delay, TTR: p.TTR})
	if err != nil {
		no := false
		switch {
		case errors.Is(err, queue.ErrJobTooBig):
			e := tooBig(len(p.Body), h.cfg.MaxJobSize)
			e.Detail = "beanstalkd answered JOB_TOO_BIG: its max-job-size (-z) is smaller than MAX_JOB_SIZE"
			return Created{}, e
		case errors.Is(err, queue.ErrDraining):
			return Created{}, &Error{Status: http.StatusServiceUnavailable, Msg: "the job queue is draining and takes no new jobs",
				Detail: "the job was not created; retry shortly", JobMayExist: &no}
		case errors.Is(err, queue.ErrServerFault), errors.Is(err, queue.ErrBuried):
			h.log.Error("beanstalkd refused a put", "tube", p.Tube, "err", err)
			return Created{}, &Error{Status: http.StatusServiceUnavailable, Msg: "the job queue refused the job: beanstalkd is out of memory or its binlog disk is full",
				Detail: "the job was not created; retry when the queue's operator has made room", JobMayExist: &no, RetryAfter: 5}
		}
		qerr := h.queueError("put job", err)
		var e *Error
		if errors.As(qerr, &e) && e.Status == http.StatusServiceUnavailable {
			if maybe := mayExist(err); maybe {
				e.JobMayExist = &maybe
				e.Detail = "the job may have been created all the same: retry with the same Idempotency-Key, which never creates a second job; without one, a retry may run it twice"
			} else {
				e.JobMayExist = &no
				e.Detail = "the job was not created; retry shortly"
			}
		}
		return Created{}, qerr
	}
	state := job.StateReady
	if p.Delay > 0 {
		state = job.StateDelayed
	}
	return Created{ID: id, Tube: p.Tube, State: state}, nil
}

// mayExist reports whether a put that failed with err may have created
// the job: unless the connection was never made, beanstalkd may have
// read the put and not answered in time.
func mayExist(err error) bool {
	var op *net.OpError
	return !(errors.As(err, &op) && op.Op == "dial")
}

// rawLimit is how much of a POST is read: twice the job limit, so that a
// pretty-printed body that normalises to within MAX_JOB_SIZE still fits,
// while memory stays bounded.
func (h *handler) rawLimit() int64 { return 2*int64(h.cfg.MaxJobSize) + 1 }

// readBody reads the request's body, up to limit bytes; tooBig says what
// is wrong with a longer one (n is its length, or -1 when unknown).
func (h *handler) readBody(c echo.Context, limit int64, tooBig func(n int64) *Error) ([]byte, error) {
	req := c.Request()
	if req.ContentLength > limit {
		return nil, tooBig(req.ContentLength)
	}
	body, err := io.ReadAll(http.MaxBytesReader(c.Response(), req.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, tooBig(-1)
		}
		return nil, errorf(http.StatusBadRequest, "read request body: %s", err.Error())
	}
	return body, nil
}

// bodySize says how long a body is: n bytes, or over limit when n is
// unknown (-1).
func bodySize(n, limit int64) string {
	if n >= 0 {
		return fmt.Sprintf("%d bytes", n)
	}
	return fmt.Sprintf("over %d bytes", limit)
}

func (h *handler) rawTooBig(n int64) *Error {
	return &Error{Status: http.StatusRequestEntityTooLarge,
		Msg:    fmt.Sprintf("request body is %s; the limit is MAX_JOB_SIZE=%d", bodySize(n, h.rawLimit()-1), h.cfg.MaxJobSize),
		Detail: "the limit counts the JSON without insignificant whitespace"}
}

// maxPatchBody bounds a PATCH body, whatever MAX_JOB_SIZE is: the only
// one it takes is {"state":"ready"}.
const maxPatchBody = 4 << 10

func patchTooBig(n int64) *Error {
	return &Error{Status: http.StatusRequestEntityTooLarge,
		Msg:    fmt.Sprintf("request body is %s; a PATCH body is at most %d bytes", bodySize(n, maxPatchBody), maxPatchBody),
		Detail: `the only change PATCH makes is {"state":"ready"}`}
}

// queueError turns a failed beanstalkd call into the API's answer.
func (h *handler) queueError(op string, err error) error {
	if errors.Is(err, queue.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		h.log.Warn("beanstalkd unavailable", "op", op, "err", err)
		return unavailable("the job queue")
	}
	return fmt.Errorf("%s: %w", op, err)
}

func (h *handler) storeError(op string, err error) error {
	if store.IsUnavailable(err) || errors.Is(err, context.Canceled) {
		h.log.Warn("MongoDB unavailable", "op", op, "err", err)
		return unavailable("the results database")
	}
	return fmt.Errorf("%s: %w", op, err)
}

func notFound(id uint64) *Error {
	return errorf(http.StatusNotFound, "job %d not found", id)
}

// queueGrace is how long lookup still waits for beanstalkd once MongoDB
// has found a stored result: beanstalkd's answer is preferred, as the
// original system asked it first, but a result is final and a hung
// beanstalkd must not hold it back for a whole backend timeout.
const queueGrace = 100 * time.Millisecond

// queueHead is beanstalkd's head start: MongoDB is asked once stats-job
// has said "not found" or failed, or after queueHead without an answer.
// A queued job (stats-job answers in well under a millisecond) then costs
// MongoDB nothing, and a hung beanstalkd costs a GET queueHead more.
const queueHead = 50 * time.Millisecond

// lookup finds job id: in beanstalkd while it is queued, else in MongoDB.
// Exactly one of stats and result is set when err is nil.
//
// beanstalkd is asked first, MongoDB after queueHead at the latest (a
// hedged request), each under its own backendTimeout, and lookup returns
// within queueHead plus that bound whether or not a call honours its
// context: a slow or hung beanstalkd cannot spend MongoDB's time, and the
// other way round. beanstalkd's answer wins when it comes in time.
func (h *handler) lookup(ctx context.Context, id uint64) (*job.Stats, *job.Result, error) {
	type queued struct {
		s   job.Stats
		err error
	}
	type stored struct {
		r   job.Result
		err error
	}
	// Buffered: a call that ends after lookup has answered does not block.
	qc, mc := make(chan queued, 1), make(chan stored, 1)
	qctx, qcancel := context.WithTimeout(ctx, backendTimeout)
	defer qcancel()
	go func() {
		s, err := h.q.StatsJob(qctx, id)
		qc <- queued{s, err}
	}()
	// mdone is closed when MongoDB's own deadline has passed; nil (never
	// ready) until MongoDB is asked.
	var mdone <-chan struct{}
	ask := func() {
		if mdone != nil {
			return
		}
		mctx, mcancel := context.WithTimeout(ctx, backendTimeout)
		mdone = mctx.Done()
		go func() {
			defer mcancel()
			r, err := h.res.Find(mctx, id)
			mc <- stored{r, err}
		}()
	}
	head := time.NewTimer(queueHead)
	defer head.Stop()
	timedOut := fmt.Errorf("stats-job %d: %w", id, context.DeadlineExceeded)

	var q *queued
	var m *stored
	var grace <-chan time.Time
	for q == nil {
		select {
		case a := <-qc:
			q = &a
		case <-head.C:
			ask()
		case a := <-mc:
			m = &a
			if a.err == nil {
				t := time.NewTimer(queueGrace)
				defer t.Stop()
				grace = t.C
			}
		case <-grace:
			q = &queued{err: timedOut}
		case <-qctx.Done(): // stays closed: stats-job's time is up
			q = &queued{err: timedOut}
		}
	}
	if q.err == nil {
		return &q.s, nil, nil
	}
	qerr := q.err
	unavailable := errors.Is(qerr, queue.ErrUnavailable) || errors.Is(qerr, context.DeadlineExceeded) ||
		errors.Is(qerr, context.Canceled)
	if !errors.Is(qerr, queue.ErrNotFound) && !unavailable {
		return nil, nil, fmt.Errorf("stats-job %d: %w", id, qerr)
	}
	if m == nil {
		ask()
		select {
		case a := <-mc:
			m = &a
		case <-mdone:
			m = &stored{err: fmt.Errorf("find result %d: %w", id, context.DeadlineExceeded)}
		}
	}
	// With beanstalkd down a stored result is still the right answer:
	// results are final.
	switch err := m.err; {
	case err == nil:
		return nil, &m.r, nil
	case unavailable:
		return nil, nil, h.queueError("stats-job", qerr)
	case errors.Is(err, store.ErrNotFound):
		return nil, nil, notFound(id)
	default:
		return nil, nil, h.storeError("find result", err)
	}
}

// get answers job N's status: beanstalkd's stats while it is queued, the
// stored result once it is done.
func (h *handler) get(c echo.Context) error {
	id, err := ParseID(c.Request().URL.Path)
	if err != nil {
		return err
	}
	s, r, err := h.lookup(c.Request().Context(), id)
	if err != nil {
		return err
	}
	if s != nil {
		return writeJSON(c, http.StatusOK, h.held(c.Request().Context(), *s))
	}
	return writeJSON(c, http.StatusOK, r)
}

// patch kicks a buried or delayed job, or runs a completed one again as
// a new job: {"state":"ready"} is the only change a client may ask for.
func (h *handler) patch(c echo.Context) error {
	id, err := ParseID(c.Request().URL.Path)
	if err != nil {
		return err
	}
	body, err := h.readBody(c, maxPatchBody, patchTooBig)
	if err != nil {
		return err
	}
	if err := wantReady(body); err != nil {
		return err
	}
	ctx := c.Request().Context()
	s, r, err := h.lookup(ctx, id)
	if err != nil {
		return err
	}
	if s == nil {
		return h.rerun(c, r) // a completed job runs again under a new id
	}
	if s.State != job.StateBuried && s.State != job.StateDelayed {
		return errorf(http.StatusConflict, "job %d is %s; only a buried or delayed job can be made ready", id, s.State)
	}
	before := time.Now()
	if err := h.q.Kick(ctx, id); err != nil {
		if errors.Is(err, queue.ErrNotFound) {
			return errorf(http.StatusConflict, "job %d changed state meanwhile; look at it again", id)
		}
		return h.queueError("kick-job", err)
	}
	h.log.Info("job kicked", "job_id", id, "tube", s.Tube, "from", s.State)
	h.recordKicked(ctx, before, s.Tube, 1, id)
	s, r, err = h.lookup(ctx, id)
	if err != nil {
		return err
	}
	if s != nil {
		return writeJSON(c, http.StatusOK, s)
	}
	return writeJSON(c, http.StatusOK, r)
}

// wantReady accepts exactly one member, "state", spelled so, with the
// value "ready": encoding/json would match "STATE" and "State" too, and
// take the last of duplicated members.
func wantReady(body []byte) error {
	bad := &Error{Status: http.StatusBadRequest, Msg: `the body must be {"state":"ready"}`,
		Detail: "it kicks a buried or delayed job, and runs a completed one again; member names are case-sensitive"}
	dec := json.NewDecoder(bytes.NewReader(body))
	for _, want := range []any{json.Delim('{'), "state", string(job.StateReady), json.Delim('}')} {
		if tok, err := dec.Token(); err != nil || tok != want {
			return bad
		}
	}
	if _, err := dec.Token(); err != io.EOF {
		return bad
	}
	return nil
}

// delete withdraws a job that no worker holds. Results are never deleted
// through the API.
func (h *handler) delete(c echo.Context) error {
	id, err := ParseID(c.Request().URL.Path)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	s, _, err := h.lookup(ctx, id)
	if err != nil {
		return err
	}
	if s == nil {
		return &Error{Status: http.StatusConflict, Msg: fmt.Sprintf("job %d is completed", id),
			Detail: "results are never deleted through the API"}
	}
	if s.State == job.StateReserved {
		return errorf(http.StatusConflict, "job %d is reserved by a worker", id)
	}
	if err := h.q.Delete(ctx, id); err != nil {
		if errors.Is(err, queue.ErrNotFound) {
			// A worker reserved it (or finished it) between the two calls.
			return errorf(http.StatusConflict, "job %d was reserved by a worker meanwhile", id)
		}
		return h.queueError("delete", err)
	}
	h.log.Info("job deleted", "job_id", id, "tube", s.Tube, "state", s.State)
	h.recordDeleted(ctx, id)
	return c.NoContent(http.StatusNoContent)
}

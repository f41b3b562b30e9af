package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

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

// post adds the request's JSON body as one job, whatever the path.
func (h *handler) post(c echo.Context) error {
	req := c.Request()
	query, err := url.ParseQuery(req.URL.RawQuery)
	if err != nil {
		return errorf(http.StatusBadRequest, "query string does not parse: %s", err.Error())
	}
	body, err := h.readBody(c, h.rawLimit())
	if err != nil {
		return err
	}
	p, err := ParsePut(body, query, PutLimits{MaxJobSize: h.cfg.MaxJobSize, DefaultTTR: h.cfg.DefaultTTR})
	if err != nil {
		return err
	}
	id, err := h.enq.Put(req.Context(), p.Body, queue.PutOptions{Tube: p.Tube, Priority: p.Priority, Delay: p.Delay, TTR: p.TTR})
	if err != nil {
		switch {
		case errors.Is(err, queue.ErrJobTooBig):
			e := tooBig(len(p.Body), h.cfg.MaxJobSize)
			e.Detail = "beanstalkd answered JOB_TOO_BIG: its max-job-size (-z) is smaller than MAX_JOB_SIZE"
			return e
		case errors.Is(err, queue.ErrDraining):
			return &Error{Status: http.StatusServiceUnavailable, Msg: "the job queue is draining and takes no new jobs", Detail: "retry shortly"}
		case errors.Is(err, queue.ErrServerFault), errors.Is(err, queue.ErrBuried):
			h.log.Error("beanstalkd refused a put", "tube", p.Tube, "err", err)
			c.Response().Header().Set(echo.HeaderRetryAfter, "5")
			return &Error{Status: http.StatusServiceUnavailable, Msg: "the job queue refused the job: beanstalkd is out of memory or its binlog disk is full",
				Detail: "the job was not created; retry when the queue's operator has made room"}
		}
		return h.queueError("put job", err)
	}
	h.metrics.enqueued(p.Tube)
	state := job.StateReady
	if p.Delay > 0 {
		state = job.StateDelayed
	}
	h.log.Debug("job added", "job_id", id, "tube", p.Tube, "bytes", len(p.Body))
	c.Response().Header().Set(echo.HeaderLocation, "/"+strconv.FormatUint(id, 10)+"/")
	return writeJSON(c, http.StatusCreated, Created{ID: id, Tube: p.Tube, State: state})
}

// rawLimit is how much of a POST is read: twice the job limit, so that a
// pretty-printed body that normalises to within MAX_JOB_SIZE still fits,
// while memory stays bounded.
func (h *handler) rawLimit() int64 { return 2*int64(h.cfg.MaxJobSize) + 1 }

func (h *handler) readBody(c echo.Context, limit int64) ([]byte, error) {
	req := c.Request()
	if req.ContentLength > limit {
		return nil, h.rawTooBig(req.ContentLength)
	}
	body, err := io.ReadAll(http.MaxBytesReader(c.Response(), req.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, h.rawTooBig(-1)
		}
		return nil, errorf(http.StatusBadRequest, "read request body: %s", err.Error())
	}
	return body, nil
}

func (h *handler) rawTooBig(n int64) *Error {
	size := fmt.Sprintf("over %d bytes", h.rawLimit()-1)
	if n >= 0 {
		size = fmt.Sprintf("%d bytes", n)
	}
	return &Error{Status: http.StatusRequestEntityTooLarge,
		Msg:    fmt.Sprintf("request body is %s; the limit is MAX_JOB_SIZE=%d", size, h.cfg.MaxJobSize),
		Detail: "the limit counts the JSON without insignificant whitespace"}
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

// lookup finds job id: in beanstalkd while it is queued, else in MongoDB.
// Exactly one of stats and result is set when err is nil. Both calls
// share one backend timeout, so that the answer comes within it.
func (h *handler) lookup(ctx context.Context, id uint64) (*job.Stats, *job.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, backendTimeout)
	defer cancel()
	s, qerr := h.q.StatsJob(ctx, id)
	if qerr == nil {
		return &s, nil, nil
	}
	if !errors.Is(qerr, queue.ErrNotFound) && !errors.Is(qerr, queue.ErrUnavailable) {
		return nil, nil, fmt.Errorf("stats-job %d: %w", id, qerr)
	}
	// With beanstalkd down a stored result is still the right answer:
	// results are final.
	r, err := h.res.Find(ctx, id)
	switch {
	case err == nil:
		return nil, &r, nil
	case errors.Is(qerr, queue.ErrUnavailable):
		return nil, nil, h.queueError("stats-job", qerr)
	case errors.Is(err, store.ErrNotFound):
		return nil, nil, notFound(id)
	}
	return nil, nil, h.storeError("find result", err)
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
		return writeJSON(c, http.StatusOK, s)
	}
	return writeJSON(c, http.StatusOK, r)
}

// patch kicks a buried or delayed job: {"state":"ready"} is the only
// change a client may ask for.
func (h *handler) patch(c echo.Context) error {
	id, err := ParseID(c.Request().URL.Path)
	if err != nil {
		return err
	}
	body, err := h.readBody(c, 4<<10)
	if err != nil {
		return err
	}
	if err := wantReady(body); err != nil {
		return err
	}
	ctx := c.Request().Context()
	s, _, err := h.lookup(ctx, id)
	if err != nil {
		return err
	}
	if s == nil {
		return errorf(http.StatusConflict, "job %d is completed; only a buried or delayed job can be made ready", id)
	}
	if s.State != job.StateBuried && s.State != job.StateDelayed {
		return errorf(http.StatusConflict, "job %d is %s; only a buried or delayed job can be made ready", id, s.State)
	}
	if err := h.q.Kick(ctx, id); err != nil {
		if errors.Is(err, queue.ErrNotFound) {
			return errorf(http.StatusConflict, "job %d changed state meanwhile; look at it again", id)
		}
		return h.queueError("kick-job", err)
	}
	h.log.Info("job kicked", "job_id", id, "tube", s.Tube, "from", s.State)
	s, r, err := h.lookup(ctx, id)
	if err != nil {
		return err
	}
	if s != nil {
		return writeJSON(c, http.StatusOK, s)
	}
	return writeJSON(c, http.StatusOK, r)
}

func wantReady(body []byte) error {
	bad := &Error{Status: http.StatusBadRequest, Msg: `the body must be {"state":"ready"}`,
		Detail: "making a buried or delayed job ready is the only change PATCH makes"}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var v struct {
		State *string `json:"state"`
	}
	if err := dec.Decode(&v); err != nil || v.State == nil || *v.State != string(job.StateReady) {
		return bad
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
	return c.NoContent(http.StatusNoContent)
}

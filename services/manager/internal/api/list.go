package api

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/queue"
	"github.com/jobsys/jobs/pkg/store"
)

// Lister pages through the completed jobs; *store.Results has it.
type Lister interface {
	Before(ctx context.Context, tube string, at time.Time, id uint64, limit int) ([]job.Result, error)
	Total(ctx context.Context) (int64, error)
}

// List limits: a page holds DefaultListLimit jobs unless ?limit= asks
// for another number, up to MaxListLimit.
const (
	DefaultListLimit = 50
	MaxListLimit     = 200
)

// ListedJob is one job of GET /jobs.
type ListedJob struct {
	ID       uint64    `json:"id"`
	Tube     string    `json:"tube"`
	State    job.State `json:"state"`
	Payload  string    `json:"payload"`
	Error    string    `json:"error,omitempty"`
	Attempts int       `json:"attempts,omitempty"`
	Worker   string    `json:"worker,omitempty"`
	// UpdatedAt is when the job last changed: completed, or failed.
	UpdatedAt time.Time `json:"updated_at,omitzero"`
	Hash      string    `json:"hash,omitempty"`
	// DurationMS is a completed job's run time; Result what its handler
	// returned (as in GET /N/).
	DurationMS     float64   `json:"duration_ms,omitempty"`
	Result         job.Value `json:"result,omitempty"`
	ResultEncoding string    `json:"result_encoding,omitempty"`
}

// JobList is GET /jobs's answer. Next, when set, is the after= of the
// following page. Count is how many jobs beanstalkd holds in the state
// (of the tube, when one is named); Total, for completed, how many
// results are stored in all, counted before the page was read: a
// completion whose cursor is after Newest (the cursor of the newest
// result then) is not in it.
type JobList struct {
	Jobs   []ListedJob `json:"jobs"`
	Next   string      `json:"next,omitempty"`
	Count  *uint64     `json:"count,omitempty"`
	Total  *int64      `json:"total,omitempty"`
	Newest string      `json:"newest,omitempty"`
}

// listQuery is GET /jobs's query string, checked.
type listQuery struct {
	state job.State
	tube  string
	limit int
	after string
}

func parseListQuery(raw string) (listQuery, error) {
	q := listQuery{limit: DefaultListLimit}
	v, err := url.ParseQuery(raw)
	if err != nil {
		return q, errorf(http.StatusBadRequest, "query string does not parse: %s", err.Error())
	}
	for k := range v {
		switch k {
		case "state", "tube", "limit", "after":
		default:
			return q, &Error{Status: http.StatusBadRequest, Msg: "unknown query parameter " + clip(k),
				Detail: "GET /jobs takes state, tube, limit and after"}
		}
	}
	q.state = job.State(v.Get("state"))
	switch q.state {
	case job.StateBuried, "failed", job.StateCompleted, job.StateReady, job.StateDelayed, job.StateReserved:
	default:
		return q, &Error{Status: http.StatusBadRequest, Msg: "state must be one of buried, failed, completed, ready, delayed, reserved",
			Detail: "got " + clip(v.Get("state"))}
	}
	if q.tube = v.Get("tube"); q.tube != "" {
		if err := queue.ValidateTube(q.tube); err != nil {
			return q, errorf(http.StatusBadRequest, "%s", err.Error())
		}
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxListLimit {
			return q, errorf(http.StatusBadRequest, "limit must be a whole number from 1 to %d", MaxListLimit)
		}
		q.limit = n
	}
	q.after = v.Get("after")
	return q, nil
}

// list answers GET /jobs?state=S&tube=T&limit=N&after=CURSOR: completed
// jobs from the results, newest first, a page at a time; for the states
// beanstalkd cannot list (ready, delayed, reserved) the count and the
// next job it would hand out.
func (h *handler) list(c echo.Context) error {
	q, err := parseListQuery(c.Request().URL.RawQuery)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), backendTimeout)
	defer cancel()
	switch q.state {
	case job.StateCompleted:
		return h.listCompleted(c, ctx, q)
	case job.StateBuried, "failed":
		return h.listFailed(c, ctx, q)
	}
	return h.listQueued(c, ctx, q)
}

func (h *handler) listCompleted(c echo.Context, ctx context.Context, q listQuery) error {
	if h.lister == nil {
		return h.needAdmin()
	}
	var at time.Time
	var id uint64
	if q.after != "" {
		var err error
		if at, id, err = job.Cursor(q.after).Parse(); err != nil {
			return errorf(http.StatusBadRequest, "after: %s", err.Error())
		}
	}
	// The total first: a result stored between the two reads is then in
	// the page (and after Newest) but not in the total, never in both.
	var total *int64
	if q.after == "" && q.tube == "" {
		n, err := h.lister.Total(ctx)
		if err != nil {
			return h.storeError("count results", err)
		}
		total = &n
	}
	rs, err := h.lister.Before(ctx, q.tube, at, id, q.limit+1)
	if err != nil {
		return h.storeError("list results", err)
	}
	out := JobList{Jobs: make([]ListedJob, 0, min(len(rs), q.limit))}
	for i, r := range rs {
		if i == q.limit {
			out.Next = string(job.CursorOf(rs[i-1]))
			break
		}
		tube := r.Tube
		if tube == "" {
			tube = queue.DefaultTube
		}
		out.Jobs = append(out.Jobs, ListedJob{ID: r.ID, Tube: tube, State: job.StateCompleted, Payload: r.Payload,
			Attempts: r.Attempts, Worker: r.Worker, UpdatedAt: r.CompletedAt, Hash: r.Hash, DurationMS: r.DurationMS,
			Result: r.Result, ResultEncoding: r.ResultEncoding})
	}
	if total != nil && len(rs) > 0 {
		out.Total, out.Newest = total, string(job.CursorOf(rs[0]))
	} else if total != nil {
		out.Total = total
	}
	return writeJSON(c, http.StatusOK, out)
}

// listQueued answers for ready, delayed and reserved jobs: beanstalkd
// counts them and shows the next ready or delayed one, nothing more.
func (h *handler) listQueued(c echo.Context, ctx context.Context, q listQuery) error {
	if err := h.needAdmin(); err != nil {
		return err
	}
	if q.after != "" {
		return &Error{Status: http.StatusBadRequest, Msg: "after: beanstalkd lists no " + string(q.state) + " jobs past the next one"}
	}
	out := JobList{Jobs: []ListedJob{}}
	if q.tube == "" {
		if q.state != job.StateReserved {
			return &Error{Status: http.StatusBadRequest, Msg: "tube is required for state=" + string(q.state),
				Detail: "beanstalkd peeks at the next job of one tube at a time"}
		}
		names, err := h.admin.TubeNames(ctx)
		if err != nil {
			return h.queueError("list-tubes", err)
		}
		st, err := h.admin.TubeInfos(ctx, names[:min(len(names), MaxTubes)])
		if err != nil {
			return h.queueError("stats-tube", err)
		}
		var n uint64
		for _, t := range st {
			n += t.CurrentJobsReserved
		}
		out.Count = &n
		return writeJSON(c, http.StatusOK, out)
	}
	info, err := h.admin.Tube(ctx, q.tube)
	if errors.Is(err, queue.ErrNotFound) {
		var zero uint64
		out.Count = &zero
		return writeJSON(c, http.StatusOK, out)
	}
	if err != nil {
		return h.queueError("stats-tube", err)
	}
	n := map[job.State]uint64{job.StateReady: info.CurrentJobsReady, job.StateDelayed: info.CurrentJobsDelayed,
		job.StateReserved: info.CurrentJobsReserved}[q.state]
	out.Count = &n
	if q.state == job.StateReserved {
		return writeJSON(c, http.StatusOK, out)
	}
	p, err := h.admin.PeekNext(ctx, q.tube, string(q.state))
	switch {
	case errors.Is(err, queue.ErrNotFound):
	case err != nil:
		return h.queueError("peek-"+string(q.state), err)
	default:
		out.Jobs = append(out.Jobs, ListedJob{ID: p.ID, Tube: q.tube, State: q.state, Payload: string(p.Body)})
	}
	return writeJSON(c, http.StatusOK, out)
}

// FailureRecords are the worker's records of failed attempts;
// *store.Failures has them. The manager lists them and keeps them true
// when an operator kicks or deletes a job.
type FailureRecords interface {
	Get(ctx context.Context, id uint64) (job.Failure, error)
	List(ctx context.Context, q store.FailureQuery) ([]job.Failure, job.Cursor, error)
	KickedBefore(ctx context.Context, before, at time.Time, tube string, n int, ids ...uint64) (int, error)
	Remove(ctx context.Context, id uint64) error
}

// listFailed lists buried jobs and failed ones (released for a retry)
// from their failure records, newest first. With a tube, count is how
// many beanstalkd holds buried (a job buried before records were kept has
// none).
func (h *handler) listFailed(c echo.Context, ctx context.Context, q listQuery) error {
	if h.failures == nil {
		return h.needAdmin()
	}
	state := job.FailureBuried
	if q.state == "failed" {
		state = job.FailureRetrying
	}
	fs, next, err := h.failures.List(ctx, store.FailureQuery{State: state, Tube: q.tube, Limit: q.limit, After: job.Cursor(q.after)})
	if errors.Is(err, store.ErrBadList) {
		return errorf(http.StatusBadRequest, "after: %s", err.Error())
	}
	if err != nil {
		return h.storeError("list failure records", err)
	}
	out := JobList{Jobs: make([]ListedJob, 0, len(fs)), Next: string(next)}
	for _, f := range fs {
		out.Jobs = append(out.Jobs, ListedJob{ID: f.ID, Tube: f.Tube, State: job.State(f.State), Payload: f.Payload,
			Error: f.Error, Attempts: f.Attempts, Worker: f.Worker, UpdatedAt: f.FailedAt})
	}
	if q.tube != "" && q.state == job.StateBuried && h.admin != nil {
		info, err := h.admin.Tube(ctx, q.tube)
		switch {
		case errors.Is(err, queue.ErrNotFound):
			var zero uint64
			out.Count = &zero
		case err == nil:
			out.Count = &info.CurrentJobsBuried
		default:
			h.log.Warn("stats-tube for the buried count", "tube", q.tube, "err", err)
		}
	}
	return writeJSON(c, http.StatusOK, out)
}

// recordKicked marks the failure records of jobs an operator kicked,
// those that failed before the kick began (at before): one kicked and
// failed again at once keeps its new record. failed_at is the worker's
// clock and before the manager's: a worker clock ahead by more than the
// time since the failure leaves a kicked job listed as buried until it
// completes or fails again. The kick itself has happened, so a failure
// here is only logged.
func (h *handler) recordKicked(ctx context.Context, before time.Time, tube string, n int, ids ...uint64) {
	if h.failures == nil || (n == 0 && len(ids) == 0) {
		return
	}
	if _, err := h.failures.KickedBefore(ctx, before, time.Now(), tube, n, ids...); err != nil {
		h.log.Warn("mark failure records kicked", "tube", tube, "job_ids", ids, "err", err)
	}
}

// recordDeleted removes the failure record of a deleted job.
func (h *handler) recordDeleted(ctx context.Context, id uint64) {
	if h.failures == nil {
		return
	}
	if err := h.failures.Remove(ctx, id); err != nil {
		h.log.Warn("remove failure record", "job_id", id, "err", err)
	}
}

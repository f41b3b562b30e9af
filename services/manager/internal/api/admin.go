package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/queue"
)

// Admin is beanstalkd's operations commands; *queue.Pool has them.
type Admin interface {
	TubeNames(ctx context.Context) ([]string, error)
	TubeInfos(ctx context.Context, names []string) ([]queue.TubeInfo, error)
	Tube(ctx context.Context, name string) (queue.TubeInfo, error)
	PauseTube(ctx context.Context, tube string, d time.Duration) error
	KickTube(ctx context.Context, tube string, bound int) (int, error)
	PeekNext(ctx context.Context, tube, state string) (queue.Peeked, error)
}

// MaxTubes is how many tubes GET /tubes describes; beyond it the answer
// says "truncated". Clients can make tubes by the thousand.
const MaxTubes = 1000

// MaxKick is the largest {"kick":N}.
const MaxKick = 100_000

// tubesPrefix is where a tube's own resource lives: /tubes/<name>.
const tubesPrefix = "/tubes/"

// opsPath reports whether path is one of the operations resources (the
// job lists and the tubes), which need the token whenever API_TOKEN is
// set and count against the rate limit.
func opsPath(path string) bool {
	return path == "/jobs" || path == "/jobs/" || path == "/tubes" || strings.HasPrefix(path, tubesPrefix)
}

// tubeName is the tube a /tubes/<name> path names, or "" for the list.
func tubeName(path string) (string, error) {
	name := strings.TrimPrefix(path, tubesPrefix)
	if path == "/tubes" || name == "" {
		return "", nil
	}
	if err := queue.ValidateTube(name); err != nil {
		return "", errorf(http.StatusBadRequest, "%s", strings.TrimPrefix(err.Error(), queue.ErrBadTube.Error()+" "))
	}
	return name, nil
}

// TubeList is GET /tubes's answer.
type TubeList struct {
	Tubes []queue.TubeInfo `json:"tubes"`
	// Truncated is set when there are more than MaxTubes tubes.
	Truncated bool `json:"truncated,omitempty"`
}

// NextJob is a job a peek copied: what a worker gets next (ready), what
// becomes ready next (delayed), what a kick moves next (buried).
type NextJob struct {
	ID      uint64 `json:"id"`
	Payload string `json:"payload"`
}

// TubeDetail is GET /tubes/T's answer: stats-tube and the next job in
// each state that beanstalkd can peek at.
type TubeDetail struct {
	queue.TubeInfo
	Next map[string]*NextJob `json:"next"`
}

func (h *handler) needAdmin() error {
	if h.admin == nil {
		return &Error{Status: http.StatusNotImplemented, Msg: "the operations API is not configured in this server"}
	}
	return nil
}

// tubes answers GET /tubes (every tube's stats) and GET /tubes/T (one
// tube's, with its next jobs).
func (h *handler) tubes(c echo.Context) error {
	if err := h.needAdmin(); err != nil {
		return err
	}
	name, err := tubeName(c.Request().URL.Path)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), backendTimeout)
	defer cancel()
	if name == "" {
		names, err := h.admin.TubeNames(ctx)
		if err != nil {
			return h.queueError("list-tubes", err)
		}
		list := TubeList{}
		if len(names) > MaxTubes {
			names, list.Truncated = names[:MaxTubes], true
		}
		list.Tubes, err = h.admin.TubeInfos(ctx, names)
		if err != nil {
			return h.queueError("stats-tube", err)
		}
		return writeJSON(c, http.StatusOK, list)
	}
	d, err := h.tubeDetail(ctx, name)
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, d)
}

func (h *handler) tubeDetail(ctx context.Context, name string) (TubeDetail, error) {
	info, err := h.admin.Tube(ctx, name)
	if errors.Is(err, queue.ErrNotFound) {
		return TubeDetail{}, noTube(name)
	}
	if err != nil {
		return TubeDetail{}, h.queueError("stats-tube", err)
	}
	d := TubeDetail{TubeInfo: info, Next: map[string]*NextJob{}}
	for _, state := range []string{"ready", "delayed", "buried"} {
		p, err := h.admin.PeekNext(ctx, name, state)
		switch {
		case errors.Is(err, queue.ErrNotFound):
			d.Next[state] = nil
		case err != nil:
			return TubeDetail{}, h.queueError("peek-"+state, err)
		default:
			d.Next[state] = &NextJob{ID: p.ID, Payload: string(p.Body)}
		}
	}
	return d, nil
}

func noTube(name string) *Error {
	return &Error{Status: http.StatusNotFound, Msg: fmt.Sprintf("tube %q not found", name),
		Detail: "beanstalkd has a tube only while a job or a client uses it"}
}

// TubeChange is PATCH /tubes/T's body: one of kick and pause.
type TubeChange struct {
	Kick  *int    `json:"kick"`
	Pause *string `json:"pause"`
}

// Kicked is the answer to {"kick":N}.
type Kicked struct {
	Kicked int `json:"kicked"`
}

// patchTube kicks up to N buried (else delayed) jobs of the tube, or
// pauses it ({"pause":"30s"}; "0s" resumes).
func (h *handler) patchTube(c echo.Context) error {
	if err := h.needAdmin(); err != nil {
		return err
	}
	name, err := tubeName(c.Request().URL.Path)
	if err != nil {
		return err
	}
	if name == "" {
		return echo.ErrMethodNotAllowed // PATCH /tubes/: a tube is needed
	}
	body, err := h.readBody(c, maxPatchBody, tubeChangeTooBig)
	if err != nil {
		return err
	}
	ch, pause, err := parseTubeChange(body)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), backendTimeout)
	defer cancel()
	if ch.Kick != nil {
		before := time.Now()
		n, err := h.admin.KickTube(ctx, name, *ch.Kick)
		if err != nil {
			return h.queueError("kick", err)
		}
		h.log.Info("tube kicked", "tube", name, "bound", *ch.Kick, "kicked", n)
		h.recordKicked(ctx, before, name, n)
		return writeJSON(c, http.StatusOK, Kicked{Kicked: n})
	}
	if err := h.admin.PauseTube(ctx, name, pause); err != nil {
		if errors.Is(err, queue.ErrNotFound) {
			return noTube(name)
		}
		return h.queueError("pause-tube", err)
	}
	h.log.Info("tube paused", "tube", name, "pause", pause.String())
	d, err := h.tubeDetail(ctx, name)
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, d)
}

func tubeChangeTooBig(n int64) *Error {
	return &Error{Status: http.StatusRequestEntityTooLarge,
		Msg:    fmt.Sprintf("request body is %s; a PATCH body is at most %d bytes", bodySize(n, maxPatchBody), maxPatchBody),
		Detail: `a tube takes {"kick":N} or {"pause":"30s"}`}
}

func parseTubeChange(body []byte) (TubeChange, time.Duration, error) {
	bad := func(detail string) *Error {
		return &Error{Status: http.StatusBadRequest, Msg: `the body must be {"kick":N} or {"pause":"30s"}`, Detail: detail}
	}
	// encoding/json matches member names case-insensitively; this API
	// takes them exactly, as PATCH /N/ does.
	var members map[string]json.RawMessage
	if err := json.Unmarshal(body, &members); err == nil {
		for name := range members {
			if name != "kick" && name != "pause" {
				return TubeChange{}, 0, bad(fmt.Sprintf("unknown member %q; member names are case-sensitive", name))
			}
		}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var ch TubeChange
	if err := dec.Decode(&ch); err != nil {
		return ch, 0, bad(err.Error())
	}
	if _, err := dec.Token(); err != io.EOF {
		return ch, 0, bad("one JSON object, nothing after it")
	}
	switch {
	case (ch.Kick == nil) == (ch.Pause == nil):
		return ch, 0, bad("give exactly one of kick and pause")
	case ch.Kick != nil:
		if *ch.Kick < 1 || *ch.Kick > MaxKick {
			return ch, 0, bad(fmt.Sprintf("kick is how many jobs to move: 1 to %d", MaxKick))
		}
		return ch, 0, nil
	}
	d, err := time.ParseDuration(*ch.Pause)
	if err != nil || d < 0 || d > queue.MaxPause || d%time.Second != 0 {
		return ch, 0, bad(fmt.Sprintf("pause is whole seconds from \"0s\" (resume) to %q", queue.MaxPause.String()))
	}
	return ch, d, nil
}

// rerun runs a completed job again: a new job with the stored payload in
// the same tube, answered as a POST is (201, Location).
func (h *handler) rerun(c echo.Context, r *job.Result) error {
	tube := r.Tube
	if tube == "" {
		tube = queue.DefaultTube
	}
	id, err := h.enq.Put(c.Request().Context(), []byte(r.Payload), queue.PutOptions{Tube: tube, TTR: h.cfg.DefaultTTR})
	switch {
	case errors.Is(err, queue.ErrDraining):
		return &Error{Status: http.StatusServiceUnavailable, Msg: "the job queue is draining and takes no new jobs", Detail: "retry shortly"}
	case errors.Is(err, queue.ErrJobTooBig):
		return &Error{Status: http.StatusConflict, Msg: fmt.Sprintf("job %d's payload is over beanstalkd's max-job-size now", r.ID)}
	case err != nil:
		return h.queueError("put job", err)
	}
	h.metrics.enqueued(tube)
	h.log.Info("job run again", "job_id", id, "from_job_id", r.ID, "tube", tube)
	c.Response().Header().Set(echo.HeaderLocation, "/"+strconv.FormatUint(id, 10)+"/")
	return writeJSON(c, http.StatusCreated, Created{ID: id, Tube: tube, State: job.StateReady})
}

// Package api is the manager's HTTP API: POST a JSON body to any path to
// add a job, GET /N/ for its status (from beanstalkd while it is queued,
// from MongoDB once it is done), PATCH /N/ to kick it, DELETE /N/ to
// withdraw it; plus /healthz, /readyz and /metrics.
//
// Every answer is JSON, every error {"error": ..., "detail": ...} with its
// status; an unreachable beanstalkd or MongoDB is a 503 within about two
// seconds, never a hang.
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/queue"
	"github.com/jobsys/jobs/services/manager/internal/idem"
)

// Queue is what the API asks of beanstalkd besides putting jobs;
// *queue.Pool has it.
type Queue interface {
	StatsJob(ctx context.Context, id uint64) (job.Stats, error)
	Delete(ctx context.Context, id uint64) error
	Kick(ctx context.Context, id uint64) error
	Ping(ctx context.Context) error
}

// Enqueuer puts jobs on beanstalkd. In the manager it is the id fence
// over the pool; *queue.Pool has it too.
type Enqueuer interface {
	Put(ctx context.Context, body []byte, o queue.PutOptions) (uint64, error)
}

// Results finds completed jobs; *store.Results has it.
type Results interface {
	Find(ctx context.Context, id uint64) (job.Result, error)
	Ping(ctx context.Context) error
}

// Keys is the record of POST's Idempotency-Key; *idem.Keys has it.
type Keys interface {
	Claim(ctx context.Context, key, fingerprint string) (idem.Claim, error)
	Done(ctx context.Context, c idem.Claim, r idem.Record) error
	Release(ctx context.Context, c idem.Claim) error
	Unknown(ctx context.Context, c idem.Claim) error
	Window() time.Duration
}

// Config is how the API behaves.
type Config struct {
	// MaxJobSize is the largest job body, in bytes after compaction.
	MaxJobSize int
	// DefaultTTR is the ttr of jobs posted without one.
	DefaultTTR time.Duration
	// CORSOrigins are the browser origins allowed; none turns CORS off.
	CORSOrigins []string
	// Token, when set, is the bearer token that POST, PATCH and DELETE
	// need; with ProtectReads, GET needs it too.
	Token        string
	ProtectReads bool
	// RateLimit is writes and operations reads (/jobs, /tubes) per second
	// per client IP (burst twice that);
	// 0 is no limit.
	RateLimit float64
	// TrustedProxies are the networks whose X-Forwarded-For and
	// X-Real-IP headers name the client.
	TrustedProxies []*net.IPNet
}

// Deps is what the API is built from.
type Deps struct {
	Queue    Queue
	Enqueuer Enqueuer
	Results  Results
	// Keys, when set, makes POST take an Idempotency-Key; without it a
	// POST with one is refused.
	Keys   Keys
	Logger *slog.Logger
	Config Config
	// Registry is where the API's metrics go and what /metrics serves;
	// nil makes a new one.
	Registry *prometheus.Registry
	// Admin, Lister and Failures serve the operations API (/jobs,
	// /tubes); without them it answers 501.
	Admin    Admin
	Lister   Lister
	Failures FailureRecords
}

// backendTimeout bounds every call to beanstalkd or MongoDB.
const backendTimeout = 2 * time.Second

// New returns the API's handler.
func New(d Deps) *echo.Echo {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Registry == nil {
		d.Registry = prometheus.NewRegistry()
	}
	if d.Config.DefaultTTR <= 0 {
		d.Config.DefaultTTR = 60 * time.Second
	}
	h := &handler{
		q: d.Queue, enq: d.Enqueuer, res: d.Results, keys: d.Keys, log: d.Logger, cfg: d.Config,
		admin: d.Admin, lister: d.Lister, failures: d.Failures,
		metrics: newMetrics(d.Registry),
	}

	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = h.handleError
	e.IPExtractor = ipExtractor(d.Config.TrustedProxies)

	e.Use(h.observe) // outermost: it sees every answer, errors included
	e.Use(func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			h := c.Response().Header()
			h.Set("Cache-Control", "no-store")
			// Every answer is JSON (or /metrics' text): a browser must
			// never take one for HTML.
			h.Set("X-Content-Type-Options", "nosniff")
			return next(c)
		}
	})
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{
		DisablePrintStack: true,
		LogErrorFunc: func(c echo.Context, err error, stack []byte) error {
			h.log.Error("panic in handler", "err", err, "method", c.Request().Method, "path", c.Request().URL.Path, "stack", string(stack))
			return err
		},
	}))
	if len(d.Config.CORSOrigins) > 0 {
		e.Use(middleware.CORSWithConfig(middleware.CORSConfig{
			AllowOrigins:  d.Config.CORSOrigins,
			AllowMethods:  []string{http.MethodGet, http.MethodPost, http.MethodPatch, http.MethodDelete},
			AllowHeaders:  []string{echo.HeaderAuthorization, echo.HeaderContentType, headerIdempotencyKey},
			ExposeHeaders: []string{echo.HeaderLocation, echo.HeaderRetryAfter, headerReplayed},
			MaxAge:        600,
		}))
	}
	e.Use(crossOrigin(d.Config.CORSOrigins, d.Logger))
	if d.Config.RateLimit > 0 {
		e.Use(newRateLimiter(d.Config.RateLimit).middleware)
	}
	if d.Config.Token != "" {
		e.Use(authenticate(d.Config.Token, d.Config.ProtectReads))
	}

	// HEAD is served wherever GET is; net/http drops the body.
	metricsHandler := echo.WrapHandler(h.metrics.handler())
	for _, r := range []struct {
		path string
		h    echo.HandlerFunc
	}{{"/healthz", h.healthz}, {"/readyz", h.readyz}, {"/metrics", metricsHandler}, {"/*", h.get},
		{"/jobs", h.list}, {"/jobs/", h.list}, {"/tubes", h.tubes}, {tubesPrefix + "*", h.tubes}} {
		e.GET(r.path, r.h)
		e.HEAD(r.path, r.h)
	}
	// POST anywhere adds a job, as the original's did: under the
	// operations paths too.
	for _, p := range []string{"/*", "/jobs", "/jobs/", "/tubes", tubesPrefix + "*"} {
		e.POST(p, h.post)
	}
	e.PATCH("/*", h.patch)
	e.PATCH(tubesPrefix+"*", h.patchTube)
	notAllowed := func(echo.Context) error { return echo.ErrMethodNotAllowed }
	for _, p := range []string{"/jobs", "/jobs/", "/tubes"} {
		e.PATCH(p, notAllowed)
		e.DELETE(p, notAllowed)
	}
	e.DELETE(tubesPrefix+"*", notAllowed)
	e.DELETE("/*", h.delete)
	options := func(c echo.Context) error {
		c.Response().Header().Set(echo.HeaderAllow, allowed(c.Request().URL.Path))
		return c.NoContent(http.StatusNoContent)
	}
	for _, p := range []string{"/*", "/jobs", "/jobs/", "/tubes", tubesPrefix + "*"} {
		e.OPTIONS(p, options)
	}
	return e
}

// NewServer returns the http.Server the manager serves h with: bounded
// header size and read, write and idle timeouts. Serve it on a listener
// wrapped by JSONErrors, so that the errors net/http answers itself are
// JSON too.
func NewServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    MaxHeaderBytes - netHTTPHeaderSlack,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}

// MaxHeaderBytes bounds a request's line and headers; more is a 431.
const MaxHeaderBytes = 16 << 10

// netHTTPHeaderSlack is what net/http reads beyond http.Server's
// MaxHeaderBytes before it answers 431 (4096 bytes of "bufio slop", see
// initialReadLimitSize in net/http/server.go): without taking it off,
// the limit would be 20 KiB, not the 16 KiB documented.
const netHTTPHeaderSlack = 4096

type handler struct {
	q        Queue
	enq      Enqueuer
	res      Results
	keys     Keys
	admin    Admin
	lister   Lister
	failures FailureRecords
	log      *slog.Logger
	cfg      Config
	metrics  *metrics
}

// allowed is the Allow header for path: every path takes POST (a new
// job) and a one-segment path is a job, which also takes GET, PATCH and
// DELETE.
func allowed(path string) string {
	switch path {
	case "/healthz", "/readyz", "/metrics", "/jobs", "/jobs/", "/tubes":
		return "GET, HEAD, OPTIONS, POST"
	}
	if strings.HasPrefix(path, tubesPrefix) {
		return "GET, HEAD, OPTIONS, PATCH, POST"
	}
	s := strings.Trim(path, "/")
	if s != "" && !strings.Contains(s, "/") {
		return "DELETE, GET, HEAD, OPTIONS, PATCH, POST"
	}
	return "GET, HEAD, OPTIONS, POST"
}

// handleError answers err as JSON with its status. Errors that are not
// the API's own are logged and answered as a bare 500: no internals leak.
func (h *handler) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	req := c.Request()
	var ae *Error
	var he *echo.HTTPError
	switch {
	case errors.As(err, &ae):
	case errors.As(err, &he):
		ae = &Error{Status: he.Code, Msg: strings.ToLower(http.StatusText(he.Code))}
		switch he.Code {
		case http.StatusMethodNotAllowed:
			allow := allowed(req.URL.Path)
			c.Response().Header().Set(echo.HeaderAllow, allow)
			ae.Msg = "method " + req.Method + " is not allowed on " + clip(req.URL.Path)
			ae.Detail = "allowed: " + allow
		case http.StatusNotFound:
			ae.Msg = "no such resource " + clip(req.URL.Path)
		case http.StatusRequestEntityTooLarge:
			ae.Msg = "request body is too large"
		}
		if ae.Msg == "" {
			ae.Msg = "error"
		}
	default:
		h.log.Error("request failed", "err", err, "method", req.Method, "path", req.URL.Path)
		ae = &Error{Status: http.StatusInternalServerError, Msg: "internal error"}
	}
	if ae.RetryAfter > 0 {
		c.Response().Header().Set(echo.HeaderRetryAfter, strconv.Itoa(ae.RetryAfter))
	}
	if ae.Status == http.StatusServiceUnavailable && c.Response().Header().Get(echo.HeaderRetryAfter) == "" {
		c.Response().Header().Set(echo.HeaderRetryAfter, "1")
	}
	if req.Method == http.MethodHead {
		c.Response().Header().Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
		_ = c.NoContent(ae.Status)
		return
	}
	if err := writeJSON(c, ae.Status, ae); err != nil {
		h.log.Debug("write error answer", "err", err)
	}
}

// writeJSON answers v as JSON with <, > and & escaped (\u003c ...), so
// that no answer, whatever a client stored in it, reads as HTML to a
// browser that sniffs; JSON parsers read the same strings.
func writeJSON(c echo.Context, status int, v any) error {
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(v); err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
	c.Response().WriteHeader(status)
	_, err := c.Response().Write(buf.Bytes())
	return err
}

// unavailable is the 503 for a backend that could not be reached.
func unavailable(what string) *Error {
	return &Error{Status: http.StatusServiceUnavailable, Msg: what + " is unavailable", Detail: "retry shortly"}
}

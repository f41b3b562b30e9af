// Package server is the notifier's HTTP surface: the WebSocket and SSE
// endpoints behind the origin and token checks, the job board's files,
// the same-origin proxy to the manager's API, the board's configuration,
// and the health, readiness and metrics endpoints.
package server

import (
	"context"
	"encoding/json"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"

	"github.com/jobsys/jobs/services/notifier/internal/config"
	"github.com/jobsys/jobs/services/notifier/internal/metrics"
)

// Pinger checks that a dependency answers.
type Pinger interface {
	Ping(ctx context.Context) error
}

// Feed is what readiness needs to know about the completion feed.
type Feed interface {
	Mode() string
	Healthy() bool
	// Started is closed once the feed delivers everything stored from
	// then on.
	Started() <-chan struct{}
}

// Hub serves the event streams.
type Hub interface {
	ServeWS(w http.ResponseWriter, r *http.Request)
	ServeSSE(w http.ResponseWriter, r *http.Request)
	Clients() int
}

// Deps are the parts the handlers use.
type Deps struct {
	Hub       Hub
	Feed      Feed
	Mongo     Pinger
	Beanstalk Pinger
	Metrics   *metrics.Metrics
	Logger    *slog.Logger
	// Board is the job board's files (web.Static()).
	Board fs.FS
}

// New returns the notifier's handler.
func New(cfg config.Config, d Deps) (http.Handler, error) {
	origins := newOriginCheck(cfg.AllowedOrigins)
	hosts := newHostCheck(cfg.AllowedHosts)
	guard := func(h http.HandlerFunc) http.Handler {
		return hosts.wrap(d.Metrics, origins.wrap(d.Metrics, requireToken(cfg.APIToken, d.Metrics, h)))
	}
	board, err := newBoard(d.Board, cfg.FrameAncestors)
	if err != nil {
		return nil, err
	}
	// Paths without a method, and getOnly in front: ServeMux would
	// answer another method with a plain-text 405.
	mux := http.NewServeMux()
	mux.Handle("/ws", getOnly(guard(afterStart(d.Feed, d.Hub.ServeWS))))
	mux.Handle("/events", getOnly(guard(afterStart(d.Feed, d.Hub.ServeSSE))))
	mux.Handle("/healthz", getOnly(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})))
	mux.Handle("/readyz", getOnly(readyz(d)))
	mux.Handle("/metrics", getOnly(d.Metrics.Handler()))
	mux.Handle("/board-config.json", getOnly(boardConfig(cfg.BoardLinks)))
	mux.Handle("/api/", hosts.wrap(d.Metrics, http.StripPrefix("/api", managerProxy(cfg.ManagerURL, d.Logger))))
	mux.Handle("/", getOnly(board))
	return mux, nil
}

// readyTimeout bounds each dependency's check in /readyz. Each has its
// own, and they run at once: with one shared deadline a MongoDB that does
// not answer used it all up and beanstalkd, asked next, was reported down.
const readyTimeout = 2 * time.Second

func readyz(d Deps) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var mongo, beanstalk string
		var wg sync.WaitGroup
		wg.Go(func() { mongo = check(r.Context(), d.Logger, "mongo", d.Mongo) })
		wg.Go(func() { beanstalk = check(r.Context(), d.Logger, "beanstalk", d.Beanstalk) })
		wg.Wait()
		body := map[string]any{
			"mode":      d.Feed.Mode(),
			"mongo":     mongo,
			"beanstalk": beanstalk,
			"clients":   d.Hub.Clients(),
		}
		// Completions come from MongoDB: without it, or before the feed
		// runs, the notifier has nothing to say. Without beanstalkd it
		// still pushes completions, so that is reported, not required.
		ready := d.Feed.Mode() != "" && d.Feed.Healthy() && mongo == "ok"
		code := http.StatusOK
		body["status"] = "ready"
		if !ready {
			code = http.StatusServiceUnavailable
			body["status"] = "not ready"
		}
		writeJSON(w, code, body)
	}
}

// check pings one dependency under its own deadline. The answer says
// what happened, not where the server lives (/readyz needs no token);
// the error itself goes to the log.
func check(ctx context.Context, log *slog.Logger, name string, p Pinger) string {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	err := p.Ping(ctx)
	switch {
	case err == nil:
		return "ok"
	case ctx.Err() != nil:
		log.Warn("readiness check", "dependency", name, "err", err)
		return "no answer within " + readyTimeout.String()
	default:
		log.Warn("readiness check", "dependency", name, "err", err)
		return "unreachable"
	}
}

func boardConfig(links []config.Link) http.HandlerFunc {
	body := map[string]any{"api": "/api", "links": links}
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		writeJSON(w, http.StatusOK, body)
	}
}

// managerProxy forwards to the manager, Authorization included; an
// unreachable manager gets a 502 in the API's error shape. The Host
// header is the browser's, not the manager's: the manager refuses a
// write whose Origin is not its Host (when the browser sends no
// Sec-Fetch-Site), and the board's own POSTs are same-origin.
func managerProxy(target *url.URL, log *slog.Logger) http.Handler {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
		},
		Transport: &http.Transport{
			Proxy:                 nil,
			DialContext:           (&netDialer).DialContext,
			MaxIdleConnsPerHost:   32,
			IdleConnTimeout:       90 * time.Second,
			ResponseHeaderTimeout: 30 * time.Second,
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			log.Warn("proxy to the manager", "err", err, "path", r.URL.Path)
			// The error names the manager's address: it stays in the log.
			writeJSON(w, http.StatusBadGateway, map[string]string{"error": "manager unreachable", "detail": "the manager did not answer; try again"})
		},
	}
}

// getOnly answers methods other than GET and HEAD with a JSON 405.
func getOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "method not allowed", "detail": "use GET or HEAD"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, code int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(body)
}

// feedStartWait is how long a new stream waits for the completion feed
// to start before it is told to come back.
const feedStartWait = 10 * time.Second

// afterStart holds a new stream until the completion feed has started: a
// replay that ran earlier could miss a result stored between the replay
// and the feed's start, which the feed then counts as history. A feed that
// does not start in time answers 503, and clients retry.
func afterStart(f Feed, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-f.Started():
			h(w, r)
		case <-r.Context().Done():
		case <-time.After(feedStartWait):
			w.Header().Set("Retry-After", "1")
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "the completion feed is not running yet; try again"})
		}
	}
}

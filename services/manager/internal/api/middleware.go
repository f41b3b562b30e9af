package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"log/slog"
	"math"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"golang.org/x/time/rate"
)

// observe logs every request and counts it in the metrics. It renders
// errors itself (through the error handler) so that it sees their status.
func (h *handler) observe(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		if err := next(c); err != nil {
			c.Error(err)
		}
		req, status := c.Request(), c.Response().Status
		took := time.Since(start)
		route := routeOf(req.Method, req.URL.Path)
		h.metrics.observe(route, req.Method, status, took)

		level := slog.LevelDebug
		switch {
		case status >= 500:
			level = slog.LevelWarn
		case status >= 400:
			level = slog.LevelInfo
		}
		h.log.Log(req.Context(), level, "request",
			"method", req.Method, "path", req.URL.Path, "route", route, "status", status,
			"duration_ms", float64(took.Microseconds())/1000, "client_ip", c.RealIP())
		return nil
	}
}

// routeOf names the route for metrics, so that labels stay few whatever
// paths clients send.
func routeOf(method, path string) string {
	switch path {
	case "/healthz", "/readyz", "/metrics":
		if method != http.MethodPost {
			return path
		}
	}
	if method == http.MethodPost {
		return "/*"
	}
	switch {
	case path == "/jobs" || path == "/jobs/" || path == "/tubes":
		return strings.TrimSuffix(path, "/")
	case strings.HasPrefix(path, tubesPrefix):
		return tubesPrefix + ":tube"
	}
	if s := strings.Trim(path, "/"); s != "" && !strings.Contains(s, "/") {
		return "/:id"
	}
	return "/*"
}

// open paths never need the token: probes and scrapers have none.
func open(path string) bool {
	return path == "/healthz" || path == "/readyz" || path == "/metrics"
}

// authenticate asks for "Authorization: Bearer <token>" on writes, and
// on reads too when protectReads: 401 when it is missing, 403 when wrong.
func authenticate(token string, protectReads bool) echo.MiddlewareFunc {
	want := sha256.Sum256([]byte(token))
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			req := c.Request()
			switch req.Method {
			case http.MethodPost, http.MethodPatch, http.MethodDelete:
				// Writes always need it, on every path: a POST anywhere is a job.
			case http.MethodGet, http.MethodHead:
				// The operations resources list every job's payload: they
				// need the token whenever there is one.
				if (!protectReads && !opsPath(req.URL.Path)) || open(req.URL.Path) {
					return next(c)
				}
			default:
				return next(c)
			}
			scheme, cred, _ := strings.Cut(req.Header.Get(echo.HeaderAuthorization), " ")
			cred = strings.TrimSpace(cred)
			if !strings.EqualFold(scheme, "Bearer") || cred == "" {
				c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer realm="jobs"`)
				return &Error{Status: http.StatusUnauthorized, Msg: "authorization required",
					Detail: "send Authorization: Bearer <token>"}
			}
			got := sha256.Sum256([]byte(cred))
			if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
				return &Error{Status: http.StatusForbidden, Msg: "the token is not valid"}
			}
			return next(c)
		}
	}
}

// rateLimiter keeps a token bucket per client IP for POSTs.
type rateLimiter struct {
	limit rate.Limit
	burst int
	// idle is how long a client's entry is kept unused. A bucket left
	// alone that long is full again, the same as a new one, so dropping
	// it changes nothing but memory.
	idle time.Duration

	mu        sync.Mutex
	clients   map[string]*client
	lastSweep time.Time
}

type client struct {
	lim  *rate.Limiter
	seen time.Time
}

func newRateLimiter(perSecond float64) *rateLimiter {
	burst := max(1, int(math.Ceil(2*perSecond)))
	idle := max(time.Duration(float64(burst)/perSecond*float64(time.Second)), time.Minute)
	return &rateLimiter{limit: rate.Limit(perSecond), burst: burst, idle: idle, clients: map[string]*client{}, lastSweep: time.Now()}
}

// allow takes a token for ip, or says how long until one is there.
func (l *rateLimiter) allow(ip string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) >= l.idle {
		for k, c := range l.clients {
			if now.Sub(c.seen) >= l.idle {
				delete(l.clients, k)
			}
		}
		l.lastSweep = now
	}
	c, ok := l.clients[ip]
	if !ok {
		c = &client{lim: rate.NewLimiter(l.limit, l.burst)}
		l.clients[ip] = c
	}
	c.seen = now
	r := c.lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

func (l *rateLimiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.clients)
}

func (l *rateLimiter) middleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		// Writes count, and so do the operations reads: each is a query.
		switch req := c.Request(); req.Method {
		case http.MethodPost, http.MethodPatch, http.MethodDelete:
		case http.MethodGet, http.MethodHead:
			if !opsPath(req.URL.Path) {
				return next(c)
			}
		default:
			return next(c)
		}
		ok, wait := l.allow(c.RealIP(), time.Now())
		if !ok {
			secs := int(math.Ceil(wait.Seconds()))
			c.Response().Header().Set(echo.HeaderRetryAfter, strconv.Itoa(max(1, secs)))
			return &Error{Status: http.StatusTooManyRequests, Msg: "too many requests",
				Detail: "this client sends requests faster than MANAGER_RATE_LIMIT allows"}
		}
		return next(c)
	}
}

// ipExtractor tells the client's address: the socket's, unless the
// socket is a trusted proxy, whose X-Forwarded-For (or else X-Real-IP)
// is then believed.
func ipExtractor(trusted []*net.IPNet) echo.IPExtractor {
	if len(trusted) == 0 {
		return echo.ExtractIPDirect()
	}
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, n := range trusted {
		opts = append(opts, echo.TrustIPRange(n))
	}
	xff, realIP := echo.ExtractIPFromXFFHeader(opts...), echo.ExtractIPFromRealIPHeader(opts...)
	return func(r *http.Request) string {
		if r.Header.Get(echo.HeaderXForwardedFor) != "" {
			return xff(r)
		}
		return realIP(r)
	}
}

// crossOrigin refuses the writes a browser sends on behalf of another
// site: an HTML form on any page can POST to an intranet manager, with
// the user's network position. It uses the browser's own word
// (Sec-Fetch-Site, else Origin against Host; see
// http.CrossOriginProtection): curl and other non-browser clients send
// neither header and pass, same-origin pages pass, and so do the
// MANAGER_CORS_ORIGINS origins. GET, HEAD and OPTIONS are never refused.
// A "*" among the origins opens the API to every site, writes included,
// as CORS "*" already does; the check is then off.
func crossOrigin(origins []string, log *slog.Logger) echo.MiddlewareFunc {
	if slices.Contains(origins, "*") {
		return func(next echo.HandlerFunc) echo.HandlerFunc { return next }
	}
	p := http.NewCrossOriginProtection()
	for _, o := range origins {
		if err := p.AddTrustedOrigin(o); err != nil {
			// config.Load refuses such origins; an embedder's is logged.
			log.Error("MANAGER_CORS_ORIGINS: origin not trusted for writes", "origin", o, "err", err)
		}
	}
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if err := p.Check(c.Request()); err != nil {
				return &Error{Status: http.StatusForbidden, Msg: "cross-origin request refused",
					Detail: "a browser sent this " + c.Request().Method + " for another site; add that site's origin to MANAGER_CORS_ORIGINS to allow it"}
			}
			return next(c)
		}
	}
}

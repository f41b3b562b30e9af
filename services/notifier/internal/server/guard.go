package server

import (
	"crypto/sha256"
	"crypto/subtle"
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/jobsys/jobs/services/notifier/internal/metrics"
)

var netDialer = net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}

// requireToken lets a request through when it carries the token as
// "Authorization: Bearer <token>" or as ?token= (browsers cannot set
// headers on WebSocket or EventSource requests): 401 without one, 403
// with a wrong one. An empty token turns the check off.
func requireToken(token string, m *metrics.Metrics, next http.Handler) http.Handler {
	if token == "" {
		return next
	}
	want := sha256.Sum256([]byte(token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := ""
		if h := r.Header.Get("Authorization"); h != "" {
			scheme, rest, _ := strings.Cut(h, " ")
			if strings.EqualFold(scheme, "Bearer") {
				got = strings.TrimSpace(rest)
			}
		}
		if got == "" {
			got = r.URL.Query().Get("token")
		}
		if got == "" {
			m.Rejected.WithLabelValues("unauthorized").Inc()
			w.Header().Set("WWW-Authenticate", `Bearer realm="notifier"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "token required",
				"detail": "send Authorization: Bearer <token> or the token query parameter"})
			return
		}
		// Hashing first makes the comparison constant-time in the length too.
		sum := sha256.Sum256([]byte(got))
		if subtle.ConstantTimeCompare(sum[:], want[:]) != 1 {
			m.Rejected.WithLabelValues("forbidden").Inc()
			writeJSON(w, http.StatusForbidden, map[string]string{"error": "wrong token"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// originCheck decides which browser origins may connect: the request's
// own host always, plus NOTIFIER_ALLOWED_ORIGINS, matched like
// coder/websocket's OriginPatterns (path.Match on the origin's host, or on
// scheme://host when the pattern has a scheme). "*" allows any origin.
type originCheck struct{ patterns }

// patterns are lower-cased path.Match patterns; any says one was "*".
type patterns struct {
	any  bool
	list []string
}

func newPatterns(ps []string) patterns {
	p := patterns{}
	for _, s := range ps {
		p.any = p.any || s == "*"
		p.list = append(p.list, strings.ToLower(s))
	}
	return p
}

func newOriginCheck(ps []string) originCheck { return originCheck{newPatterns(ps)} }

func (o originCheck) allowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || o.any {
		return true // not a browser, or anybody is welcome
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	if strings.EqualFold(r.Host, u.Host) {
		return true
	}
	for _, p := range o.list {
		target := strings.ToLower(u.Host)
		if strings.Contains(p, "://") {
			target = strings.ToLower(u.Scheme) + "://" + target
		}
		if ok, _ := path.Match(p, target); ok {
			return true
		}
	}
	return false
}

// wrap refuses foreign origins with 403 and, for an allowed cross-origin
// request, says so in CORS headers (EventSource needs them).
func (o originCheck) wrap(m *metrics.Metrics, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !o.allowed(r) {
			m.Rejected.WithLabelValues("origin").Inc()
			writeJSON(w, http.StatusForbidden, map[string]string{"error": "origin not allowed", "detail": r.Header.Get("Origin")})
			return
		}
		if origin := r.Header.Get("Origin"); origin != "" {
			w.Header().Set("Access-Control-Allow-Origin", origin)
			w.Header().Add("Vary", "Origin")
		}
		next.ServeHTTP(w, r)
	})
}

// hostCheck refuses requests for a host name this server does not go by:
// a page whose own DNS name is rebound to this server's address is
// same-origin with it, so the Origin check lets it in, but its Host
// header still names the attacker's domain. IP addresses and localhost
// always pass; other names must match NOTIFIER_ALLOWED_HOSTS (path.Match
// on the name without its port), and "*" lets every name in.
type hostCheck struct{ patterns }

func newHostCheck(ps []string) hostCheck { return hostCheck{newPatterns(ps)} }

func (h hostCheck) allowed(host string) bool {
	if h.any {
		return true
	}
	name := host
	if n, _, err := net.SplitHostPort(host); err == nil {
		name = n
	}
	name = strings.ToLower(strings.TrimSuffix(strings.Trim(name, "[]"), "."))
	if name == "localhost" || strings.HasSuffix(name, ".localhost") || net.ParseIP(name) != nil {
		return true
	}
	for _, p := range h.list {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}

func (h hostCheck) wrap(m *metrics.Metrics, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !h.allowed(r.Host) {
			m.Rejected.WithLabelValues("host").Inc()
			writeJSON(w, http.StatusForbidden, map[string]string{"error": "host not allowed",
				"detail": "this server does not answer to that host name; add it to NOTIFIER_ALLOWED_HOSTS"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

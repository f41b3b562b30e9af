// Package config is the manager's configuration: every setting it reads
// from the environment (and a .env file), with defaults, checked all at
// once so that a bad deployment names every variable it got wrong.
package config

import (
	"fmt"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jobsys/jobs/pkg/config"
)

// Config is everything the manager is told from outside.
type Config struct {
	config.Service

	// ListenHost is MANAGER_LISTEN_HOST; empty listens on every interface.
	ListenHost string
	// ListenPort is MANAGER_LISTEN_PORT; 0 lets the system choose.
	ListenPort int

	// MaxJobSize is the largest job body, in bytes after compaction.
	MaxJobSize int
	// DefaultTTR is the time-to-run of jobs posted without ttr.
	DefaultTTR time.Duration

	// CORSOrigins are the browser origins allowed to call the API; none
	// means no CORS headers at all.
	CORSOrigins []string

	// APIToken, when set, is the bearer token that writes need.
	APIToken string
	// ProtectReads makes GET /N need the token too.
	ProtectReads bool

	// RateLimit is how many POSTs per second one client IP may send; 0
	// turns the limit off. The burst is twice the rate.
	RateLimit float64
	// TrustedProxies are the networks whose X-Forwarded-For and X-Real-IP
	// headers are believed when telling the client's address.
	TrustedProxies []*net.IPNet

	// IdempotencyWindow is how long a POST's Idempotency-Key is
	// remembered.
	IdempotencyWindow time.Duration
}

// Addr is the address to listen on.
func (c Config) Addr() string {
	return net.JoinHostPort(c.ListenHost, strconv.Itoa(c.ListenPort))
}

// Defaults that are not in pkg/config.
const (
	DefaultListenPort = 8080
	DefaultMaxJobSize = 65535
	DefaultTTR        = 60 * time.Second
	// DefaultIdempotencyWindow is how long an Idempotency-Key is kept.
	DefaultIdempotencyWindow = 24 * time.Hour
	maxIdempotencyWindow     = 365 * 24 * time.Hour
	// maxBeanstalkSize is beanstalkd's own ceiling for -z.
	maxBeanstalkSize = 1 << 30
	// maxSeconds is the largest delay or ttr beanstalkd takes.
	maxSeconds = math.MaxUint32 * time.Second
)

// Load reads the configuration from getenv and, under it, a .env file in
// the working directory. terminal says whether logs go to a terminal,
// which makes text the default log format. The error names every bad
// variable.
func Load(getenv config.Getenv, terminal bool) (Config, error) {
	r, shared, err := config.Open(getenv, terminal)
	if err != nil {
		return Config{}, err
	}
	c := Config{
		Service:      shared,
		ListenHost:   strings.Trim(r.String("", "MANAGER_LISTEN_HOST"), "[]"),
		ListenPort:   r.Port("MANAGER_LISTEN_PORT", DefaultListenPort),
		MaxJobSize:   int(r.Int("MAX_JOB_SIZE", DefaultMaxJobSize, 1, maxBeanstalkSize)),
		DefaultTTR:   r.Duration("DEFAULT_TTR", DefaultTTR, time.Second),
		CORSOrigins:  r.List("MANAGER_CORS_ORIGINS", nil),
		ProtectReads: r.Bool("API_TOKEN_PROTECT_READS", false),

		IdempotencyWindow: r.Duration("MANAGER_IDEMPOTENCY_WINDOW", DefaultIdempotencyWindow, time.Minute),
	}
	if c.IdempotencyWindow > maxIdempotencyWindow {
		r.Failf("MANAGER_IDEMPOTENCY_WINDOW", "%s is longer than a year", c.IdempotencyWindow)
	}
	if c.DefaultTTR > maxSeconds {
		r.Failf("DEFAULT_TTR", "%s is longer than beanstalkd's limit of %d seconds", c.DefaultTTR, uint32(math.MaxUint32))
	}
	if h := c.ListenHost; h != "" && net.ParseIP(h) == nil && !validHostname(h) {
		r.Failf("MANAGER_LISTEN_HOST", "%q is not an IP address or host name", h)
	}
	for _, o := range c.CORSOrigins {
		// The origins are also the ones trusted to write from a browser,
		// so they must be what http.CrossOriginProtection takes.
		bad := !strings.HasPrefix(o, "http://") && !strings.HasPrefix(o, "https://") ||
			http.NewCrossOriginProtection().AddTrustedOrigin(o) != nil
		if o != "*" && bad {
			r.Failf("MANAGER_CORS_ORIGINS", "%q is not an origin like https://example.com", o)
		}
	}
	c.APIToken = r.APIToken()
	c.RateLimit = rate(r)
	c.TrustedProxies = proxies(r)
	if err := r.Err(); err != nil {
		return Config{}, fmt.Errorf("manager configuration: %w", err)
	}
	return c, nil
}

func rate(r *config.Reader) float64 {
	v := r.String("", "MANAGER_RATE_LIMIT")
	if v == "" {
		return 0
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) || f > 1e6 {
		r.Failf("MANAGER_RATE_LIMIT", "%q is not a number of requests per second from 0 (off) to 1000000", v)
		return 0
	}
	return f
}

// proxies reads MANAGER_TRUSTED_PROXIES: CIDRs, or single addresses.
func proxies(r *config.Reader) []*net.IPNet {
	var out []*net.IPNet
	for _, s := range r.List("MANAGER_TRUSTED_PROXIES", nil) {
		if !strings.Contains(s, "/") {
			if ip := net.ParseIP(s); ip != nil {
				bits := 128
				if ip.To4() != nil {
					ip, bits = ip.To4(), 32
				}
				out = append(out, &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)})
				continue
			}
		}
		_, n, err := net.ParseCIDR(s)
		if err != nil {
			r.Failf("MANAGER_TRUSTED_PROXIES", "%q is not a CIDR like 10.0.0.0/8 or an IP address", s)
			continue
		}
		out = append(out, n)
	}
	return out
}

func validHostname(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range []byte(label) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

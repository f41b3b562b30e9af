// Package config is the notifier's configuration: one struct read from the
// environment (and a .env file), with defaults, validated all at once so a
// bad start names every variable that is wrong.
package config

import (
	"fmt"
	"net/url"
	"os"
	"path"
	"strings"
	"time"

	"github.com/jobsys/jobs/pkg/config"

	"github.com/jobsys/jobs/services/notifier/internal/feed"
)

// Config is everything the notifier reads from its environment.
type Config struct {
	config.Service

	ListenHost string
	ListenPort int

	// Mode is auto, changestream or poll (the feed's modes).
	Mode string
	// FeedDelay is the longest the feed takes to deliver a completion: a
	// polling feed reads this often, and a watched job gone from the
	// queue waits this long for its completion before the store is asked
	// (in either mode). NOTIFIER_FEED_DELAY, or NOTIFIER_POLL_INTERVAL.
	FeedDelay time.Duration
	// Lookback is how far back the feed reads again for writes that
	// commit late: each poll, a change stream's catch-up after a
	// reconnect, and an SSE Last-Event-ID replay.
	// NOTIFIER_LOOKBACK, or NOTIFIER_POLL_LOOKBACK.
	Lookback time.Duration
	// PingInterval is how often WebSocket clients are pinged; one that
	// has not answered by the next ping is disconnected.
	PingInterval time.Duration
	ReplayLimit  int
	// MaxReplays is how many replays may read MongoDB at once.
	MaxReplays int
	// ReplayMemory is the bytes the latest completions may take in
	// memory, for replays that start within them; 0 keeps none.
	ReplayMemory int
	// MaxWatches caps the job watches of all clients together, and
	// MaxClientWatches those of one client.
	MaxWatches       int
	MaxClientWatches int
	// WriteTimeout bounds each write to a client; one that takes longer
	// (a peer that stopped reading) is disconnected.
	WriteTimeout time.Duration
	// StatsTubes is how many tubes a stats frame lists (the busiest).
	StatsTubes int
	// ID names this instance's record in notifier_state.
	ID string

	// AllowedOrigins are extra browser origins (or host patterns) that
	// may connect; the request's own host is always allowed. "*" allows
	// every origin.
	AllowedOrigins []string
	// AllowedHosts are host names (or patterns) that /ws, /events and
	// /api/ answer to besides IP addresses and localhost: a page that
	// rebinds its own DNS name to this server is refused. "*" allows
	// every host.
	AllowedHosts []string
	// FrameAncestors are the origins that may show the board in a frame;
	// none by default.
	FrameAncestors []string
	MaxClients     int
	// MaxPending bounds the connections that are not event streams
	// (sending headers, idle, or asking for a file).
	MaxPending int
	// ClientBuffer is how many frames may wait for one slow client before
	// it is closed.
	ClientBuffer int

	ManagerURL *url.URL
	BoardLinks []Link

	// APIToken, when set, is required on /ws and /events.
	APIToken string
}

// Link is a console the board links to.
type Link struct {
	Name string `json:"name"`
	URL  string `json:"url"`
}

// Load reads the configuration from getenv and then the .env file in the
// working directory (the real environment wins). terminal says whether
// stdout is a terminal (text logs by default) or not (JSON logs).
func Load(getenv config.Getenv, terminal bool) (Config, error) {
	r, shared, err := config.Open(getenv, terminal)
	if err != nil {
		return Config{}, err
	}
	c := Config{
		Service:          shared,
		ListenHost:       r.String("", "NOTIFIER_LISTEN_HOST"),
		ListenPort:       r.Port("NOTIFIER_LISTEN_PORT", 8083),
		Mode:             strings.ToLower(r.String(feed.ModeAuto, "NOTIFIER_MODE")),
		FeedDelay:        r.Duration(alias(r, "NOTIFIER_FEED_DELAY", "NOTIFIER_POLL_INTERVAL"), 250*time.Millisecond, 10*time.Millisecond),
		Lookback:         r.Duration(alias(r, "NOTIFIER_LOOKBACK", "NOTIFIER_POLL_LOOKBACK"), 2*time.Second, 0),
		ReplayLimit:      int(r.Int("NOTIFIER_REPLAY_LIMIT", 10000, 1, 1_000_000)),
		MaxReplays:       int(r.Int("NOTIFIER_MAX_REPLAYS", 4, 1, 1000)),
		ReplayMemory:     int(r.Int("NOTIFIER_REPLAY_MEMORY", 16<<20, 0, 16<<30)),
		MaxWatches:       int(r.Int("NOTIFIER_MAX_WATCHES", 1_000_000, 1, 100_000_000)),
		MaxClientWatches: int(r.Int("NOTIFIER_MAX_CLIENT_WATCHES", 10000, 1, 1_000_000)),
		WriteTimeout:     r.Duration("NOTIFIER_WRITE_TIMEOUT", 5*time.Second, 10*time.Millisecond),
		StatsTubes:       int(r.Int("NOTIFIER_STATS_TUBES", 50, 1, 10_000)),
		AllowedOrigins:   r.List("NOTIFIER_ALLOWED_ORIGINS", nil),
		AllowedHosts:     r.List("NOTIFIER_ALLOWED_HOSTS", nil),
		FrameAncestors:   r.List("NOTIFIER_FRAME_ANCESTORS", nil),
		MaxClients:       int(r.Int("NOTIFIER_MAX_CLIENTS", 10000, 1, 1_000_000)),
		MaxPending:       int(r.Int("NOTIFIER_MAX_PENDING", 1000, 1, 1_000_000)),
		ClientBuffer:     int(r.Int("NOTIFIER_CLIENT_BUFFER", 1024, 1, 1_000_000)),
		PingInterval:     r.Duration("NOTIFIER_PING_INTERVAL", 20*time.Second, 100*time.Millisecond),
		ID:               r.String("", "NOTIFIER_ID"),
	}
	switch c.Mode {
	case feed.ModeAuto, feed.ModeChangeStream, feed.ModePoll:
	default:
		r.Failf("NOTIFIER_MODE", "%q is not %s, %s or %s", c.Mode, feed.ModeAuto, feed.ModeChangeStream, feed.ModePoll)
	}
	if c.Lookback > time.Hour {
		r.Failf(alias(r, "NOTIFIER_LOOKBACK", "NOTIFIER_POLL_LOOKBACK"), "%s is longer than an hour", c.Lookback)
	}
	if c.ID == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			r.Failf("NOTIFIER_ID", "not set and the hostname is unknown (%v)", err)
		}
		c.ID = h
	}
	for _, p := range c.AllowedOrigins {
		if _, err := path.Match(p, ""); err != nil {
			r.Failf("NOTIFIER_ALLOWED_ORIGINS", "%q is not a valid pattern: %v", p, err)
		}
	}
	for _, p := range c.AllowedHosts {
		if _, err := path.Match(p, ""); err != nil {
			r.Failf("NOTIFIER_ALLOWED_HOSTS", "%q is not a valid pattern: %v", p, err)
		}
	}
	for _, o := range c.FrameAncestors {
		if u, err := parseHTTPURL(o); err != nil || u.Path != "" || u.RawQuery != "" {
			r.Failf("NOTIFIER_FRAME_ANCESTORS", "%q is not an origin like https://host[:port]", o)
		}
	}
	c.ManagerURL = readURL(r, "MANAGER_URL", "http://127.0.0.1:8080")
	c.BoardLinks = readLinks(r, "BOARD_LINKS")
	c.APIToken = r.APIToken()
	return c, r.Err()
}

// alias returns the variable to read: name, or its old name when only
// that is set, so that errors name the variable the user set.
func alias(r *config.Reader, name, old string) string {
	if r.String("", name) == "" && r.String("", old) != "" {
		return old
	}
	return name
}

// Addr is the address the HTTP server listens on.
func (c Config) Addr() string {
	return fmt.Sprintf("%s:%d", c.ListenHost, c.ListenPort)
}

func readURL(r *config.Reader, key, def string) *url.URL {
	s := r.String(def, key)
	u, err := parseHTTPURL(s)
	if err != nil {
		r.Failf(key, "%v", err)
		u, _ = url.Parse(def)
	}
	return u
}

func parseHTTPURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("%q is not a URL: %w", s, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%q is not an http:// or https:// URL with a host", s)
	}
	return u, nil
}

// readLinks reads "name=url,name=url".
func readLinks(r *config.Reader, key string) []Link {
	links := []Link{}
	for _, item := range r.List(key, nil) {
		name, raw, ok := strings.Cut(item, "=")
		name, raw = strings.TrimSpace(name), strings.TrimSpace(raw)
		if !ok || name == "" {
			r.Failf(key, "%q is not name=url", item)
			continue
		}
		u, err := parseHTTPURL(raw)
		if err != nil {
			r.Failf(key, "link %q: %v", name, err)
			continue
		}
		links = append(links, Link{Name: name, URL: u.String()})
	}
	return links
}

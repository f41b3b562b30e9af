// Package config loads the services' settings from the environment and an
// optional .env file, with defaults, and collects every bad value into one
// error that names the variables.
//
// Each service keeps its own Config struct; this package gives them the
// shared pieces (beanstalkd, MongoDB, logging) and the typed readers.
package config

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/joho/godotenv"
)

// Getenv looks up one variable; it returns "" when the variable is unset.
type Getenv func(string) string

// WithDotEnv returns a Getenv that asks getenv first and then the .env
// file at path, so the real environment always wins. A missing file is not
// an error; a file that does not parse is.
func WithDotEnv(getenv Getenv, path string) (Getenv, error) {
	vals, err := godotenv.Read(path)
	if errors.Is(err, os.ErrNotExist) {
		return getenv, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return func(key string) string {
		return cmp.Or(getenv(key), vals[key])
	}, nil
}

// Reader reads typed values and remembers every problem it meets, so a
// service can report all of them at once.
type Reader struct {
	getenv Getenv
	errs   []error
}

// NewReader returns a Reader over getenv.
func NewReader(getenv Getenv) *Reader {
	return &Reader{getenv: getenv}
}

// Err returns every problem met so far, joined, or nil.
func (r *Reader) Err() error { return errors.Join(r.errs...) }

// Failf records a problem with the variable key.
func (r *Reader) Failf(key, format string, args ...any) {
	r.errs = append(r.errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
}

// String returns the value of the first key that is set, or def.
func (r *Reader) String(def string, keys ...string) string {
	for _, k := range keys {
		if v := strings.TrimSpace(r.getenv(k)); v != "" {
			return v
		}
	}
	return def
}

// Int returns key as an integer in [min, max], or def when unset.
func (r *Reader) Int(key string, def, min, max int64) int64 {
	v := strings.TrimSpace(r.getenv(key))
	if v == "" {
		return def
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < min || n > max {
		r.Failf(key, "%q is not a whole number from %d to %d", v, min, max)
		return def
	}
	return n
}

// Port returns key as a TCP port (0 lets the system choose), or def.
func (r *Reader) Port(key string, def int) int {
	return int(r.Int(key, int64(def), 0, 65535))
}

// Bool returns key as a boolean, or def when unset.
func (r *Reader) Bool(key string, def bool) bool {
	v := strings.TrimSpace(r.getenv(key))
	if v == "" {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		r.Failf(key, "%q is not true or false", v)
		return def
	}
	return b
}

// Duration returns key as a duration of at least min, or def when unset.
// A bare number is read as seconds, as the original system did.
func (r *Reader) Duration(key string, def, min time.Duration) time.Duration {
	v := strings.TrimSpace(r.getenv(key))
	if v == "" {
		return def
	}
	d, err := ParseDuration(v)
	if err != nil || d < min {
		r.Failf(key, "%q is not a duration of at least %s (like 250ms, 5s or a number of seconds)", v, min)
		return def
	}
	return d
}

// List returns key split on commas, without blanks, or def when unset.
func (r *Reader) List(key string, def []string) []string {
	v := strings.TrimSpace(r.getenv(key))
	if v == "" {
		return def
	}
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		r.Failf(key, "%q lists nothing", v)
		return def
	}
	return out
}

// ParseDuration reads a Go duration ("1.5s", "250ms") or a number of
// seconds ("30", "0.5"). Negative values are refused.
func ParseDuration(s string) (time.Duration, error) {
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if f < 0 || f > float64(1<<62)/float64(time.Second) {
			return 0, fmt.Errorf("duration %q out of range", s)
		}
		return time.Duration(f * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("duration %q: want a number of seconds or a Go duration like 1.5s", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("duration %q is negative", s)
	}
	return d, nil
}

// Beanstalk is where beanstalkd listens.
type Beanstalk struct {
	Host string
	Port int
}

// Addr returns host:port.
func (b Beanstalk) Addr() string { return net.JoinHostPort(b.Host, strconv.Itoa(b.Port)) }

// Beanstalk reads BEANSTALK_HOST and BEANSTALK_PORT.
func (r *Reader) Beanstalk() Beanstalk {
	b := Beanstalk{
		Host: r.String("127.0.0.1", "BEANSTALK_HOST"),
		Port: r.Port("BEANSTALK_PORT", 11300),
	}
	if b.Port == 0 {
		r.Failf("BEANSTALK_PORT", "must not be 0")
	}
	return b
}

// Mongo is the results store.
type Mongo struct {
	URL        string
	DB         string
	Collection string
	// Server is auto (ask the server what it is), mongodb or ferretdb:
	// how results are stamped and indexed (pkg/store).
	Server string
}

// Mongo reads MONGO_URL, MONGO_DB, MONGO_COLLECTION and MONGO_SERVER.
func (r *Reader) Mongo() Mongo {
	m := Mongo{
		URL:        r.String("mongodb://127.0.0.1:27017", "MONGO_URL"),
		DB:         r.String("jobs", "MONGO_DB"),
		Collection: r.String("completed", "MONGO_COLLECTION"),
		Server:     strings.ToLower(r.String("auto", "MONGO_SERVER")),
	}
	switch m.Server {
	case "auto", "mongodb", "ferretdb":
	default:
		r.Failf("MONGO_SERVER", "%q is not auto, mongodb or ferretdb", m.Server)
	}
	if !strings.HasPrefix(m.URL, "mongodb://") && !strings.HasPrefix(m.URL, "mongodb+srv://") {
		r.Failf("MONGO_URL", "%q must start with mongodb:// or mongodb+srv://", m.URL)
	}
	if strings.ContainsAny(m.DB, `/\. "$`) {
		r.Failf("MONGO_DB", "%q may not contain / \\ . space \" or $", m.DB)
	}
	if strings.HasPrefix(m.Collection, "system.") || strings.Contains(m.Collection, "$") {
		r.Failf("MONGO_COLLECTION", "%q is not a usable collection name", m.Collection)
	}
	return m
}

// Log is how a service logs.
type Log struct {
	Format string // "json" or "text"
	Level  string
}

// Log reads LOG_FORMAT (json or text; default text on a terminal) and
// LOG_LEVEL (debug, info, warn, error).
func (r *Reader) Log(terminal bool) Log {
	def := "json"
	if terminal {
		def = "text"
	}
	l := Log{Format: r.String(def, "LOG_FORMAT"), Level: r.String("info", "LOG_LEVEL")}
	if l.Format != "json" && l.Format != "text" {
		r.Failf("LOG_FORMAT", "%q is not json or text", l.Format)
	}
	switch strings.ToLower(l.Level) {
	case "debug", "info", "warn", "error":
	default:
		r.Failf("LOG_LEVEL", "%q is not debug, info, warn or error", l.Level)
	}
	return l
}

// Service is what every service reads the same way.
type Service struct {
	Beanstalk Beanstalk
	Mongo     Mongo
	Log       Log
}

// Open returns a Reader over getenv and, under it, the .env file in the
// working directory (the real environment wins), with the settings every
// service shares read already. terminal says whether stdout is a
// terminal, which makes text the default log format. The service reads its
// own settings from the Reader and then returns its Err.
func Open(getenv Getenv, terminal bool) (*Reader, Service, error) {
	getenv, err := WithDotEnv(getenv, ".env")
	if err != nil {
		return nil, Service{}, err
	}
	r := NewReader(getenv)
	return r, Service{Beanstalk: r.Beanstalk(), Mongo: r.Mongo(), Log: r.Log(terminal)}, nil
}

// APIToken reads API_TOKEN, or the file API_TOKEN_FILE names (a Docker
// secret; surrounding space trimmed), refusing both at once, an empty
// file, and a token that is not visible ASCII without spaces: the same
// token must work in a header and in a URL.
func (r *Reader) APIToken() string {
	tok := r.String("", "API_TOKEN")
	file := r.String("", "API_TOKEN_FILE")
	name := "API_TOKEN"
	if file != "" {
		name = "API_TOKEN_FILE"
		if tok != "" {
			r.Failf(name, "set API_TOKEN or API_TOKEN_FILE, not both")
			return ""
		}
		b, err := os.ReadFile(file)
		switch {
		case errors.Is(err, os.ErrNotExist):
			r.Failf(name, "%q does not exist", file)
			return ""
		case err != nil:
			r.Failf(name, "read %q: %v", file, err)
			return ""
		}
		if tok = strings.TrimSpace(string(b)); tok == "" {
			r.Failf(name, "%q is empty", file)
			return ""
		}
	}
	for _, c := range []byte(tok) {
		if c <= ' ' || c > '~' {
			r.Failf(name, "the token may hold only visible ASCII characters, without spaces")
			return ""
		}
	}
	return tok
}

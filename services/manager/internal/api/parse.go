package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jobsys/jobs/pkg/config"
	"github.com/jobsys/jobs/pkg/queue"
)

// Error is an API error: the status it is answered with and the JSON
// body {"error": ..., "detail": ...}.
type Error struct {
	Status int    `json:"-"`
	Msg    string `json:"error"`
	Detail string `json:"detail,omitempty"`
	// JobMayExist, on a POST's 503, says whether the job may have been
	// created all the same.
	JobMayExist *bool `json:"job_may_exist,omitempty"`
	// RetryAfter, when set, is the Retry-After header in seconds (a 503
	// gets 1 without it).
	RetryAfter int `json:"-"`
}

func (e *Error) Error() string { return fmt.Sprintf("%d %s", e.Status, e.Msg) }

func errorf(status int, format string, args ...any) *Error {
	return &Error{Status: status, Msg: fmt.Sprintf(format, args...)}
}

// MaxDepth is how deeply a job's JSON may nest.
const MaxDepth = 1000

// maxSeconds is the largest delay or ttr beanstalkd takes.
const maxSeconds = math.MaxUint32

// PutLimits are the settings ParsePut checks a request against.
type PutLimits struct {
	// MaxJobSize is the largest body, in bytes once normalised.
	MaxJobSize int
	// DefaultTTR is the ttr of a job posted without one.
	DefaultTTR time.Duration
}

// PutRequest is a POST turned into what beanstalkd is asked to do.
type PutRequest struct {
	// Body is the request's JSON as the original system stored it:
	// JSON.stringify(JSON.parse(body)), see NormalizeJSON.
	Body     []byte
	Tube     string
	Priority uint32
	// Delay and TTR are whole seconds: beanstalkd counts in seconds.
	Delay time.Duration
	TTR   time.Duration
}

// ParsePut checks a POST's query and body and returns the put it asks
// for. The body is taken as JSON whatever the request's Content-Type, as
// the original system took it: curl --data sends
// application/x-www-form-urlencoded unless told otherwise. Every error it
// returns is an *Error with a 4xx status; it never panics, whatever the
// input.
func ParsePut(body []byte, query url.Values, lim PutLimits) (PutRequest, error) {
	p, err := parsePutQuery(query, lim.DefaultTTR)
	if err != nil {
		return PutRequest{}, err
	}
	p.Body, err = NormalizeJSON(body, lim.MaxJobSize)
	if err != nil {
		return PutRequest{}, err
	}
	return p, nil
}

// NormalizeJSON checks that body is one JSON document in UTF-8, nested at
// most MaxDepth deep, and returns it as the original Node system stored
// it, JSON.stringify(JSON.parse(body)), byte for byte: no insignificant
// whitespace, strings and numbers spelled as JavaScript spells them, keys
// in V8's order, a duplicate key's last value. It refuses a result over
// maxSize bytes.
func NormalizeJSON(body []byte, maxSize int) ([]byte, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, &Error{Status: http.StatusBadRequest, Msg: "request body is empty",
			Detail: `send a JSON document, like {"example":"data"}`}
	}
	out, err := canonical(body, maxSize)
	switch {
	case err == nil:
		return out, nil
	case errors.Is(err, errCanonTooBig) && out != nil:
		return nil, tooBig(len(out), maxSize)
	case errors.Is(err, errCanonTooBig):
		return nil, errorf(http.StatusRequestEntityTooLarge, "job body is over %d bytes once normalised; the limit is MAX_JOB_SIZE=%d", maxSize, maxSize)
	}
	return nil, syntaxError(body)
}

// syntaxError says what is wrong with a body canonical refused, and where.
func syntaxError(body []byte) *Error {
	if !utf8.Valid(body) {
		return errorf(http.StatusBadRequest, "request body is not valid UTF-8: bad byte at offset %d", badUTF8(body))
	}
	if off, deep := tooDeep(body, MaxDepth); deep {
		return errorf(http.StatusBadRequest, "JSON nests deeper than %d levels (at byte %d)", MaxDepth, off)
	}
	var raw json.RawMessage
	err := json.Unmarshal(body, &raw)
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return errorf(http.StatusBadRequest, "invalid JSON: syntax error at byte offset %d: %s", se.Offset, se.Error())
	}
	if err != nil {
		return errorf(http.StatusBadRequest, "invalid JSON: %s", err.Error())
	}
	return errorf(http.StatusBadRequest, "invalid JSON")
}

func tooBig(n, max int) *Error {
	return errorf(http.StatusRequestEntityTooLarge, "job body is %d bytes; the limit is MAX_JOB_SIZE=%d", n, max)
}

func parsePutQuery(q url.Values, defTTR time.Duration) (PutRequest, error) {
	p := PutRequest{Tube: queue.DefaultTube, TTR: defTTR}
	for _, k := range []string{"tube", "priority", "delay", "ttr"} {
		if n := len(q[k]); n > 1 {
			return p, errorf(http.StatusBadRequest, "query parameter %s is given %d times; give it once", k, n)
		}
	}
	if q.Has("tube") {
		p.Tube = q.Get("tube")
		if err := queue.ValidateTube(p.Tube); err != nil {
			return p, &Error{Status: http.StatusBadRequest, Msg: "tube " + clip(p.Tube) + " is not a valid tube name",
				Detail: "a tube name is 1 to 200 letters, digits and -+/;.$_(), not starting with a hyphen"}
		}
	}
	if q.Has("priority") {
		v := q.Get("priority")
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return p, errorf(http.StatusBadRequest, "priority %s is not a whole number from 0 to %d", clip(v), uint32(queue.MaxPriority))
		}
		p.Priority = uint32(n)
	}
	var err error
	if q.Has("delay") {
		if p.Delay, err = seconds("delay", q.Get("delay"), 0); err != nil {
			return p, err
		}
	}
	if q.Has("ttr") {
		if p.TTR, err = seconds("ttr", q.Get("ttr"), time.Second); err != nil {
			return p, err
		}
	}
	return p, nil
}

// seconds reads a duration (a number of seconds or a Go duration) of at
// least min and rounds it up to whole seconds, the unit beanstalkd has.
func seconds(name, v string, min time.Duration) (time.Duration, error) {
	d, err := config.ParseDuration(strings.TrimSpace(v))
	if err != nil || d < min {
		return 0, &Error{Status: http.StatusBadRequest,
			Msg:    fmt.Sprintf("%s %s is not a duration of at least %s", name, clip(v), min),
			Detail: "give a number of seconds, like 30, or a Go duration, like 1m30s"}
	}
	d = (d + time.Second - 1).Truncate(time.Second)
	if d > maxSeconds*time.Second || d < 0 {
		return 0, errorf(http.StatusBadRequest, "%s %s is longer than beanstalkd's limit of %d seconds", name, clip(v), uint32(maxSeconds))
	}
	return d, nil
}

// tooDeep reports whether JSON text b nests deeper than max, and where.
// It reads strings only to skip them, so it runs before and apart from
// the syntax check.
func tooDeep(b []byte, max int) (int, bool) {
	depth := 0
	inString, escaped := false, false
	for i, c := range b {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '[' || c == '{':
			depth++
			if depth > max {
				return i, true
			}
		case c == ']' || c == '}':
			depth--
		}
	}
	return 0, false
}

func badUTF8(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n == 1 {
			return i
		}
		i += n
	}
	return -1
}

// clip quotes user input for a message, cut short when long.
func clip(s string) string {
	const max = 64
	if len(s) > max {
		s = strings.ToValidUTF8(s[:max], "") + "..."
	}
	return strconv.Quote(s)
}

// ParseID reads the job id from a path like /12 or /12/. A path of more
// than one segment is not a job (404); a segment that is not a positive
// integer is a bad id (400).
func ParseID(path string) (uint64, error) {
	s := strings.TrimPrefix(path, "/")
	s = strings.TrimSuffix(s, "/")
	if s == "" || strings.Contains(s, "/") {
		return 0, &Error{Status: http.StatusNotFound, Msg: "no such resource " + clip(path),
			Detail: "GET /N/ answers the status of job N; POST a JSON body to add a job"}
	}
	id, err := strconv.ParseUint(s, 10, 63) // MongoDB keeps ids as int64
	if err != nil || id == 0 {
		return 0, errorf(http.StatusBadRequest, "job id must be a positive integer up to %d, not %s", uint64(math.MaxInt64), clip(s))
	}
	return id, nil
}

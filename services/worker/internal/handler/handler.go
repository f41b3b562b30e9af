// Package handler is the work a worker does with a job: the Handler
// interface, the built-in handlers ("md5", the original system's demo work,
// and "fail", for rehearsing dead letters), programs run as handlers
// (Exec), the simulated work delay, and the mux that picks a handler by
// the job's tube. The public package jobworker exports it.
package handler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/jobsys/jobs/pkg/config"
	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/queue"
)

// Job is what a handler is given: the reserved job's id, tube and body,
// which attempt this is (1 for the first run), and its time to run.
type Job struct {
	ID      uint64
	Tube    string
	Body    []byte
	Attempt int
	// TTR is the job's time to run, as its producer set it. The worker
	// keeps the reservation alive while a handler runs; exec handlers
	// are killed shortly before TTR.
	TTR time.Duration
}

// Output is what a handler produced, stored in the result beside the
// job's payload (which is always stored unchanged). Hash is the md5
// handler's field; Result is any other handler's answer, a JSON value.
type Output struct {
	Hash string
	// Result is stored as the result document's "result" field.
	Result job.Value
	// ResultEncoding is job.EncodingBase64 when Result holds bytes that
	// were not UTF-8 text.
	ResultEncoding string
}

// JSON returns the output whose result is v encoded as JSON.
func JSON(v any) (Output, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return Output{}, fmt.Errorf("encode the result as JSON: %w", err)
	}
	return Raw(b), nil
}

// Raw returns the output for a handler's raw bytes: valid JSON is the
// result itself, other text a JSON string, other bytes base64 (see
// job.ValueOf).
func Raw(b []byte) Output {
	v, enc := job.ValueOf(b)
	return Output{Result: v, ResultEncoding: enc}
}

// ErrSkipRetry, wrapped in a handler's error, buries the job at once
// instead of retrying it: for work that cannot succeed, such as a
// payload the handler cannot read.
var ErrSkipRetry = errors.New("not retried")

// Handler does the work of one job. It must return soon after ctx is
// cancelled: the worker cancels it when the shutdown grace runs out and
// releases the job for another worker. An error means the work failed and
// the job is retried (and buried after too many attempts).
type Handler interface {
	Handle(ctx context.Context, j Job) (Output, error)
}

// Func adapts a function to Handler.
type Func func(ctx context.Context, j Job) (Output, error)

// Handle calls f.
func (f Func) Handle(ctx context.Context, j Job) (Output, error) { return f(ctx, j) }

// Names of the built-in handlers.
const (
	MD5  = "md5"
	Fail = "fail"
)

// ErrFail is what the "fail" handler always returns.
var ErrFail = errors.New(`the "fail" handler always fails`)

var builtins = map[string]Handler{
	MD5: Func(func(ctx context.Context, j Job) (Output, error) {
		return Output{Hash: job.Hash(string(j.Body))}, nil
	}),
	Fail: Func(func(ctx context.Context, j Job) (Output, error) {
		return Output{}, ErrFail
	}),
}

// Builtin returns the built-in handler called name.
func Builtin(name string) (Handler, bool) {
	h, ok := builtins[name]
	return h, ok
}

// Names lists the built-in handlers, sorted.
func Names() []string {
	names := make([]string, 0, len(builtins))
	for n := range builtins {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Delay is simulated work time, as the original worker slept before
// hashing: Min when Max equals it, otherwise uniformly random in
// [Min, Max]. The zero Delay is no delay.
type Delay struct {
	Min, Max time.Duration
}

// ParseDelay reads "" or "0" (no delay), a duration ("2s", or a number of
// seconds) or a range "1s-5s" whose ends are such durations.
func ParseDelay(s string) (Delay, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Delay{}, nil
	}
	lo, hi, isRange := strings.Cut(s, "-")
	min, err := config.ParseDuration(strings.TrimSpace(lo))
	if err != nil {
		return Delay{}, fmt.Errorf("%q: want a duration like 2s or a range like 1s-5s", s)
	}
	max := min
	if isRange {
		if max, err = config.ParseDuration(strings.TrimSpace(hi)); err != nil {
			return Delay{}, fmt.Errorf("%q: want a duration like 2s or a range like 1s-5s", s)
		}
		if max < min {
			return Delay{}, fmt.Errorf("%q: the range ends before it starts", s)
		}
	}
	return Delay{Min: min, Max: max}, nil
}

// String is the form ParseDelay reads.
func (d Delay) String() string {
	switch {
	case d.Max == 0:
		return "off"
	case d.Min == d.Max:
		return d.Min.String()
	}
	return d.Min.String() + "-" + d.Max.String()
}

// Pick returns one delay.
func (d Delay) Pick() time.Duration {
	if d.Max <= d.Min {
		return d.Min
	}
	return d.Min + rand.N(d.Max-d.Min+1)
}

// WithDelay returns h preceded by the simulated work time d; it returns h
// itself when d is zero. The wait ends early, with ctx's error, when ctx is
// cancelled.
func WithDelay(h Handler, d Delay) Handler {
	if d.Max == 0 {
		return h
	}
	return Func(func(ctx context.Context, j Job) (Output, error) {
		t := time.NewTimer(d.Pick())
		defer t.Stop()
		select {
		case <-ctx.Done():
			return Output{}, fmt.Errorf("simulated work of job %d: %w", j.ID, context.Cause(ctx))
		case <-t.C:
		}
		return h.Handle(ctx, j)
	})
}

// Mux picks the handler for a job by its tube, in the style of
// net/http's ServeMux: handlers are registered by tube, and a default
// handler takes the tubes none is registered for.
type Mux struct {
	def    Handler
	byTube map[string]Handler
}

// NewMux returns a mux with no handlers.
func NewMux() *Mux { return &Mux{byTube: map[string]Handler{}} }

// Handle registers h for tube. It panics when tube is not a valid tube
// name, h is nil, or tube has a handler already: a program's handler
// table is fixed before it starts.
func (m *Mux) Handle(tube string, h Handler) {
	if err := queue.ValidateTube(tube); err != nil {
		panic(fmt.Sprintf("handler for tube %q: %v", tube, err))
	}
	if h == nil {
		panic(fmt.Sprintf("handler for tube %q is nil", tube))
	}
	if m.Has(tube) {
		panic(fmt.Sprintf("tube %q has a handler already", tube))
	}
	m.byTube[tube] = h
}

// HandleFunc registers f for tube, as Handle does.
func (m *Mux) HandleFunc(tube string, f func(ctx context.Context, j Job) (Output, error)) {
	m.Handle(tube, Func(f))
}

// HandleDefault makes h the handler of every tube without its own.
func (m *Mux) HandleDefault(h Handler) { m.def = h }

// HasDefault reports whether a default handler is set.
func (m *Mux) HasDefault() bool { return m.def != nil }

// Has reports whether tube has its own handler.
func (m *Mux) Has(tube string) bool {
	_, ok := m.byTube[tube]
	return ok
}

// Tubes lists the tubes that have their own handler, sorted.
func (m *Mux) Tubes() []string {
	out := make([]string, 0, len(m.byTube))
	for t := range m.byTube {
		out = append(out, t)
	}
	slices.Sort(out)
	return out
}

// ErrNoHandler is the failure of a job whose tube has no handler and
// the mux no default.
var ErrNoHandler = errors.New("no handler for this tube")

// For returns the handler for tube.
func (m *Mux) For(tube string) Handler {
	if h, ok := m.byTube[tube]; ok {
		return h
	}
	if m.def != nil {
		return m.def
	}
	return Func(func(context.Context, Job) (Output, error) {
		return Output{}, fmt.Errorf("tube %q: %w", tube, ErrNoHandler)
	})
}

// Clone returns a copy of m that can be changed without changing m.
func (m *Mux) Clone() *Mux {
	c := &Mux{def: m.def, byTube: make(map[string]Handler, len(m.byTube))}
	for t, h := range m.byTube {
		c.byTube[t] = h
	}
	return c
}

// FromSpec returns the handler a WORKER_HANDLERS entry names: a built-in
// behind the simulated work delay, or a program (ExecPrefix + path).
func FromSpec(spec string, delay Delay, o ExecOptions) (Handler, error) {
	if path, ok := strings.CutPrefix(spec, ExecPrefix); ok {
		if err := CheckProgram(path); err != nil {
			return nil, err
		}
		return Exec(path, o), nil
	}
	h, ok := Builtin(spec)
	if !ok {
		return nil, fmt.Errorf("unknown handler %q (known: %s, or exec:/path/to/program)", spec, strings.Join(Names(), ", "))
	}
	return WithDelay(h, delay), nil
}

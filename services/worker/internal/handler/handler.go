// Package handler is the work a worker does with a job: the Handler
// interface, the built-in handlers ("md5", the original system's demo work,
// and "fail", for rehearsing dead letters), the simulated work delay, and
// the registry that picks a handler by the job's tube.
package handler

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/jobsys/jobs/pkg/config"
	"github.com/jobsys/jobs/pkg/job"
)

// Job is what a handler is given: the reserved job's id, tube and body, and
// which delivery this is (1 for the first).
type Job struct {
	ID      uint64
	Tube    string
	Body    []byte
	Attempt int
}

// Output is what a handler produced. Hash is stored as the result's hash;
// the body is always stored unchanged as the result's payload.
type Output struct {
	Hash string
}

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

// Registry picks the handler for a job by its tube.
type Registry struct {
	def    Handler
	byTube map[string]Handler
}

// NewRegistry returns a registry that gives byTube[tube], or def for tubes
// it does not list.
func NewRegistry(def Handler, byTube map[string]Handler) *Registry {
	return &Registry{def: def, byTube: byTube}
}

// Builtins returns the registry that WORKER_HANDLERS describes: tube to
// built-in handler name, "md5" for every other tube, each behind delay.
func Builtins(byTube map[string]string, delay Delay) (*Registry, error) {
	m := make(map[string]Handler, len(byTube))
	for tube, name := range byTube {
		h, ok := Builtin(name)
		if !ok {
			return nil, fmt.Errorf("tube %q: unknown handler %q (known: %s)", tube, name, strings.Join(Names(), ", "))
		}
		m[tube] = WithDelay(h, delay)
	}
	def, _ := Builtin(MD5)
	return NewRegistry(WithDelay(def, delay), m), nil
}

// For returns the handler for tube.
func (r *Registry) For(tube string) Handler {
	if h, ok := r.byTube[tube]; ok {
		return h
	}
	return r.def
}

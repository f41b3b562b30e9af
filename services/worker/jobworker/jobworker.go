// Package jobworker runs this system's worker with your own handlers: a
// program outside this repository registers a handler per tube on a Mux
// and calls Main, and gets the same worker as bin/worker — configuration
// from the environment (docs/configuration.md), retries with back-off,
// burying after WORKER_MAX_ATTEMPTS, failure records, the reservation
// touched while a handler runs, /healthz and /metrics, and a graceful
// shutdown on SIGTERM.
//
//	func main() {
//		mux := jobworker.NewMux()
//		mux.HandleFunc("reverse", func(ctx context.Context, j jobworker.Job) (jobworker.Output, error) {
//			var in struct{ Text string `json:"text"` }
//			if err := json.Unmarshal(j.Body, &in); err != nil {
//				return jobworker.Output{}, fmt.Errorf("payload: %w: %w", err, jobworker.ErrSkipRetry)
//			}
//			return jobworker.JSON(map[string]string{"reversed": reverse(in.Text)})
//		})
//		jobworker.Main(mux)
//	}
//
// A handler's Output is stored as the result document's "result" field
// (docs/results.md). An error fails the attempt: the job is retried, and
// buried after the last attempt or at once when the error wraps
// ErrSkipRetry. A handler must return soon after its context ends.
//
// WORKER_HANDLERS still adds the built-in and program handlers to the
// mux's, and tubes without a handler get the built-in md5, as bin/worker
// does. When WORKER_TUBES is unset the worker watches the mux's tubes.
package jobworker

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/jobsys/jobs/services/worker/internal/handler"
)

// Job is a reserved job: its id, tube and body, which attempt this is (1
// for the first run) and its time to run.
type Job = handler.Job

// Output is what a handler returns; see JSON and Raw.
type Output = handler.Output

// Handler does the work of one job.
type Handler = handler.Handler

// HandlerFunc adapts a function to Handler.
type HandlerFunc = handler.Func

// Mux picks the handler for a job by its tube: Handle, HandleFunc and
// HandleDefault register them.
type Mux = handler.Mux

// ErrSkipRetry, wrapped in a handler's error, buries the job at once
// instead of retrying it.
var ErrSkipRetry = handler.ErrSkipRetry

// NewMux returns a mux with no handlers.
func NewMux() *Mux { return handler.NewMux() }

// JSON returns the output whose result is v encoded as JSON.
func JSON(v any) (Output, error) { return handler.JSON(v) }

// Raw returns the output for raw bytes: valid JSON is the result itself,
// other UTF-8 text a JSON string, other bytes a base64 string.
func Raw(b []byte) Output { return handler.Raw(b) }

// MD5 returns the built-in handler of the original system: the MD5 hex
// digest of JavaScript's JSON.stringify of the payload, stored as "hash".
func MD5() Handler {
	h, _ := handler.Builtin(handler.MD5)
	return h
}

// Main runs the worker with mux's handlers until SIGINT or SIGTERM, with
// the process's environment, logging to stdout, and exits with status 1
// when it cannot start.
func Main(mux *Mux) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := Run(ctx, mux, os.Getenv, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}

// Run is Main without the process: it reads the configuration from
// getenv (and a .env file), logs to stdout, and works jobs with mux's
// handlers until ctx ends. mux itself is not changed.
func Run(ctx context.Context, mux *Mux, getenv func(string) string, stdout io.Writer) error {
	return run(ctx, mux, getenv, stdout)
}

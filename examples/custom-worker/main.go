// Command custom-worker is a worker with a handler of its own, built the
// way a program outside this repository builds one: it imports only the
// public package jobworker, registers a Go function for the tube
// "reverse", and gets the whole worker (configuration from the
// environment, retries, failure records, metrics, graceful shutdown).
//
//	go run ./examples/custom-worker      # watches "reverse" (WORKER_TUBES unset)
//	curl -d '{"text":"hello"}' 'localhost:8080/?tube=reverse'
//	curl localhost:8080/<id>/            # "result":{"reversed":"olleh","runes":5}
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"unicode/utf8"

	"github.com/jobsys/jobs/services/worker/jobworker"
)

func main() { jobworker.Main(newMux()) }

// newMux is the program's handler table.
func newMux() *jobworker.Mux {
	mux := jobworker.NewMux()
	mux.HandleFunc("reverse", reverse)
	return mux
}

// reverse returns the payload's text reversed, rune by rune. A payload
// without a text is buried at once: retrying cannot help it.
func reverse(_ context.Context, j jobworker.Job) (jobworker.Output, error) {
	var in struct {
		Text *string `json:"text"`
	}
	if err := json.Unmarshal(j.Body, &in); err != nil || in.Text == nil {
		return jobworker.Output{}, fmt.Errorf(`the payload must be {"text": "..."}: %w`, jobworker.ErrSkipRetry)
	}
	runes := []rune(*in.Text)
	slices.Reverse(runes)
	return jobworker.JSON(map[string]any{"reversed": string(runes), "runes": utf8.RuneCountInString(*in.Text)})
}

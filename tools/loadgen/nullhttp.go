package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/jobsys/jobs/pkg/procs"
)

// nullHTTPArg makes loadgen serve the empty handler instead of measuring:
// `loadgen -serve-null-http 127.0.0.1:PORT` (port 0: one it chooses; it
// prints "listening <url>" once it listens). The benchmark starts itself
// this way to learn what an HTTP request costs on this machine, apart from
// anything the manager does.
const nullHTTPArg = "-serve-null-http"

// serveNullHTTP answers POST / like the manager's contract (201 and a job
// id, after reading and checking the JSON body) and any GET with a small
// JSON body, doing nothing else, until ctx ends.
func serveNullHTTP(ctx context.Context, addr string, stdout io.Writer) error {
	answer := []byte(`{"id":1,"tube":"default","state":"ready"}`)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /", func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil || !json.Valid(b) {
			http.Error(w, `{"error":"bad body"}`, http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write(answer)
	})
	mux.HandleFunc("GET /", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(answer)
	})
	return serveUntil(ctx, addr, mux, stdout)
}

// serveUntil serves h on addr until ctx ends, then shuts down gracefully.
// It prints "listening <url>" to stdout once it listens, so a parent that
// gave it port 0 learns the port (procs.ListeningLine).
func serveUntil(ctx context.Context, addr string, h http.Handler, stdout io.Writer) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "listening http://%s\n", l.Addr())
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// startNullHTTP runs the empty handler as a child process, as the manager
// runs, and returns its URL.
func (s *stack) startNullHTTP(ctx context.Context) (*procs.Proc, string, error) {
	return s.startReference(ctx, "nullhttp", "the empty HTTP handler", nullHTTPArg)
}

// startReference runs loadgen itself as a reference server (mode, port 0,
// then args) in a child process, as the manager runs, and returns its URL,
// from the line it prints, once /healthz answers.
func (s *stack) startReference(ctx context.Context, name, what, mode string, args ...string) (*procs.Proc, string, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, "", fmt.Errorf("find the loadgen binary: %w", err)
	}
	p, err := s.start(procs.Spec{Name: name, Path: self, Args: append([]string{mode, "127.0.0.1:0"}, args...), Ready: procs.ListeningLine})
	if err != nil {
		return nil, "", err
	}
	u, err := p.WaitReady(ctx, 10*time.Second)
	if err != nil {
		return nil, "", err
	}
	return p, u, waitUntil(ctx, p, 10*time.Second, what, procs.HTTP(u+"/healthz"))
}

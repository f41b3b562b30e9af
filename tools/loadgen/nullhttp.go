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
	"strconv"
	"time"

	"github.com/jobsys/jobs/pkg/testenv"
)

// nullHTTPArg makes loadgen serve the empty handler instead of measuring:
// `loadgen -serve-null-http 127.0.0.1:PORT`. The benchmark starts itself
// this way to learn what an HTTP request costs on this machine, apart from
// anything the manager does.
const nullHTTPArg = "-serve-null-http"

// serveNullHTTP answers POST / like the manager's contract (201 and a job
// id, after reading and checking the JSON body) and any GET with a small
// JSON body, doing nothing else, until ctx ends.
func serveNullHTTP(ctx context.Context, addr string) error {
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
	return serveUntil(ctx, addr, mux)
}

// serveUntil serves h on addr until ctx ends, then shuts down gracefully.
func serveUntil(ctx context.Context, addr string, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
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
func (s *stack) startNullHTTP(ctx context.Context) (*proc, string, error) {
	return s.startReference(ctx, "nullhttp", "the empty HTTP handler", nullHTTPArg)
}

// startReference runs loadgen itself as a reference server (mode, a free
// address, then args) in a child process, as the manager runs, and
// returns its URL once /healthz answers.
func (s *stack) startReference(ctx context.Context, name, what, mode string, args ...string) (*proc, string, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, "", fmt.Errorf("find the loadgen binary: %w", err)
	}
	port, err := testenv.FreePort()
	if err != nil {
		return nil, "", err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	p, err := s.start(name, self, append([]string{mode, addr}, args...), nil)
	if err != nil {
		return nil, "", err
	}
	u := "http://" + addr
	return p, u, waitUntil(ctx, p, 10*time.Second, what, healthOK(u+"/healthz"))
}

package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestHTTPConn checks the closed-loop client against net/http's server: the
// request it writes, both ways of framing an answer, a server that closes
// the connection, an error status, and a body larger than its buffer.
func TestHTTPConn(t *testing.T) {
	t.Parallel()
	var conns atomic.Int32
	big := strings.Repeat("x", 70_000)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /base/", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Header.Get("Content-Type") != "application/json" || r.URL.Query().Get("tube") != "t1" || string(b) != `{"a":1}` {
			http.Error(w, `{"error":"unexpected request"}`, http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"id":42,"tube":"t1","state":"ready"}`)
	})
	mux.HandleFunc("GET /base/7/", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"id":7,`)
		w.(http.Flusher).Flush() // chunked from here on
		_, _ = io.WriteString(w, `"state":"ready"}`)
	})
	mux.HandleFunc("GET /base/8/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		_, _ = io.WriteString(w, big)
	})
	mux.HandleFunc("GET /base/9/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"error":"job 9 not found"}`, http.StatusNotFound)
	})
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := newHTTPConn(srv.URL + "/base/")
	require.NoError(t, err)
	defer c.Close()

	for range 3 {
		id, err := c.postJob(ctx, "t1", []byte(`{"a":1}`))
		require.NoError(t, err)
		require.Equal(t, uint64(42), id)
	}
	body, err := c.getJob(ctx, 7)
	require.NoError(t, err)
	require.JSONEq(t, `{"id":7,"state":"ready"}`, string(body))
	require.Equal(t, int32(1), conns.Load(), "keep-alive: one connection so far")

	body, err = c.getJob(ctx, 8)
	require.NoError(t, err)
	require.Equal(t, big, string(body))
	_, err = c.getJob(ctx, 9)
	require.ErrorContains(t, err, "status 404")
	require.ErrorContains(t, err, "job 9 not found")
	require.Equal(t, int32(2), conns.Load(), "a new connection after Connection: close")

	_, err = c.postJob(ctx, "t2", []byte(`{"a":1}`))
	require.ErrorContains(t, err, "status 400")

	_, err = newHTTPConn("https://example.com")
	require.ErrorContains(t, err, "is not an http:// URL")
}

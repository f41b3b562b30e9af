package api_test

import (
	"bufio"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/services/manager/internal/api"
)

// TestServerErrorsAreJSON: the errors net/http answers by itself, before
// any handler, are JSON too; handlers' answers pass unchanged.
func TestServerErrorsAreJSON(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Shaped like net/http's own error, to show it is left alone.
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Connection", "close")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, "400 Bad Request")
	})
	srv := api.NewServer(h, slog.New(slog.DiscardHandler))
	go func() { _ = srv.Serve(api.JSONErrors(ln, api.MaxHeaderBytes)) }()
	t.Cleanup(func() { _ = srv.Close() })

	send := func(raw string) (*http.Response, []byte) {
		t.Helper()
		c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
		require.NoError(t, err)
		defer c.Close()
		require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
		_, err = io.WriteString(c, raw)
		require.NoError(t, err)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		require.NoError(t, err)
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp, body
	}
	big := strings.Repeat("x", api.MaxHeaderBytes+8<<10)
	// The request line and headers below are 16 KiB and one byte.
	const head = "GET /1/ HTTP/1.1\r\nHost: a\r\nX-Big: \r\n\r\n"
	over := strings.Repeat("x", api.MaxHeaderBytes+1-len(head))
	for _, tc := range []struct {
		name, raw string
		status    int
		msg       string
		detail    string
	}{
		{"headers too large", "GET /1/ HTTP/1.1\r\nHost: a\r\nX-Big: " + big + "\r\n\r\n", 431, "request headers are too large", "up to 16384 bytes"},
		{"headers just over the limit", "GET /1/ HTTP/1.1\r\nHost: a\r\nX-Big: " + over + "\r\n\r\n", 431, "request headers are too large", "up to 16384 bytes"},
		{"not HTTP", "HELLO\r\n\r\n", 400, "bad request", "not well-formed"},
		{"no Host", "GET /1/ HTTP/1.1\r\n\r\n", 400, "bad request", "missing required Host header"},
		{"bad header line", "GET /1/ HTTP/1.1\r\nHost: a\r\nno colon\r\n\r\n", 400, "bad request", "not well-formed"},
		{"unknown transfer coding", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: rot13\r\n\r\n", 501, "not implemented", "Unsupported transfer encoding"},
	} {
		resp, body := send(tc.raw)
		require.Equal(t, tc.status, resp.StatusCode, "%s: %s", tc.name, body)
		require.Equal(t, "application/json", resp.Header.Get("Content-Type"), tc.name)
		require.Equal(t, "nosniff", resp.Header.Get("X-Content-Type-Options"), tc.name)
		var e struct{ Error, Detail string }
		require.NoError(t, json.Unmarshal(body, &e), "%s: %s", tc.name, body)
		require.Equal(t, tc.msg, e.Error, tc.name)
		require.Contains(t, e.Detail, tc.detail, tc.name)
	}

	// Exactly 16 KiB of request line and headers is served.
	for _, raw := range []string{"GET /1/ HTTP/1.1\r\nHost: a\r\n\r\n", "GET /1/ HTTP/1.1\r\nHost: a\r\nX-Big: " + over[1:] + "\r\n\r\n"} {
		resp, body := send(raw)
		require.Equal(t, http.StatusBadRequest, resp.StatusCode)
		require.Equal(t, "text/plain; charset=utf-8", resp.Header.Get("Content-Type"), "a handler's answer is its own")
		require.Equal(t, "400 Bad Request", string(body))
	}
}

package main

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func noEnv(string) string { return "" }

func TestHealthyOnlyOn200(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		status int
		want   int
	}{
		{"ok", http.StatusOK, 0},
		{"no content is not ok", http.StatusNoContent, 1},
		{"redirect is not followed", http.StatusFound, 1},
		{"not found", http.StatusNotFound, 1},
		{"unavailable", http.StatusServiceUnavailable, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/healthz" {
					w.WriteHeader(http.StatusOK) // a followed redirect would land here
					return
				}
				if tc.status == http.StatusFound {
					http.Redirect(w, r, "/elsewhere", tc.status)
					return
				}
				w.WriteHeader(tc.status)
			}))
			t.Cleanup(srv.Close)
			var stderr bytes.Buffer
			require.Equal(t, tc.want, run([]string{srv.URL + "/healthz"}, noEnv, &stderr), stderr.String())
			if tc.want != 0 {
				require.Contains(t, stderr.String(), "healthz")
			}
		})
	}
}

func TestGivesUpAfterTimeout(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(release); srv.Close() })
	var stderr bytes.Buffer
	start := time.Now()
	require.Equal(t, 1, run([]string{"-timeout", "200ms", srv.URL + "/healthz"}, noEnv, &stderr))
	require.Less(t, time.Since(start), 2*time.Second)
	require.Contains(t, stderr.String(), "no answer within 200ms")
}

func TestNothingListening(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	var stderr bytes.Buffer
	require.Equal(t, 1, run([]string{"http://" + addr + "/healthz"}, noEnv, &stderr))
	require.Contains(t, stderr.String(), "connection refused")
}

func TestURLNamesEnvironmentVariables(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	_, port, err := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
	require.NoError(t, err)

	env := map[string]string{"PORT": port}
	getenv := func(k string) string { return env[k] }
	var stderr bytes.Buffer
	require.Equal(t, 0, run([]string{"http://127.0.0.1:${PORT:-1}/healthz"}, getenv, &stderr), stderr.String())
	require.Equal(t, 0, run([]string{"http://127.0.0.1:$PORT/healthz"}, getenv, &stderr), stderr.String())
	// The default applies when the variable is unset.
	require.Equal(t, 0, run([]string{"http://127.0.0.1:${UNSET:-" + port + "}/healthz"}, getenv, &stderr), stderr.String())
	require.Equal(t, "http://h:8080/x", expand("http://h:${P:-8080}/x", noEnv))
}

func TestBadCommandLines(t *testing.T) {
	t.Parallel()
	for name, args := range map[string][]string{
		"no URL":         nil,
		"two URLs":       {"http://a/", "http://b/"},
		"not a URL":      {"127.0.0.1:8080/healthz"},
		"wrong scheme":   {"tcp://127.0.0.1:8080"},
		"bad timeout":    {"-timeout", "soon", "http://127.0.0.1/"},
		"zero timeout":   {"-timeout", "0s", "http://127.0.0.1/"},
		"unknown option": {"-x", "http://127.0.0.1/"},
	} {
		var stderr bytes.Buffer
		require.Equal(t, 1, run(args, noEnv, &stderr), name)
		require.NotEmpty(t, stderr.String(), name)
	}
}

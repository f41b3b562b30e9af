package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The board allows its own files only, and no foreign page may frame it
// (it has a token dialog) unless NOTIFIER_FRAME_ANCESTORS names it.
func TestBoardHasAContentSecurityPolicyAndRefusesFrames(t *testing.T) {
	t.Parallel()
	b := setup(t)
	n := start(t, b, nil)
	for _, p := range []string{"/", "/app.js", "/style.css"} {
		resp, _ := get(t, n.base+p, nil)
		require.Equal(t, http.StatusOK, resp.StatusCode, p)
		csp := resp.Header.Get("Content-Security-Policy")
		require.Contains(t, csp, "default-src 'none'", p)
		require.Contains(t, csp, "script-src 'self'", p)
		require.Contains(t, csp, "frame-ancestors 'none'", p)
		require.NotContains(t, csp, "unsafe-inline", p)
		require.Equal(t, "DENY", resp.Header.Get("X-Frame-Options"), p)
	}

	framed := start(t, b, map[string]string{"NOTIFIER_FRAME_ANCESTORS": "https://portal.example,https://ops.example:8443"})
	resp, _ := get(t, framed.base+"/", nil)
	require.Contains(t, resp.Header.Get("Content-Security-Policy"), "frame-ancestors https://portal.example https://ops.example:8443")
	require.Empty(t, resp.Header.Get("X-Frame-Options"), "X-Frame-Options cannot name origins; the CSP does")

	// The notifier's own JSON is never sniffed as something else.
	for _, p := range []string{"/healthz", "/board-config.json", "/ws", "/events?last=0", "/nope"} {
		resp, _ := get(t, n.base+p, nil)
		require.Equal(t, "nosniff", resp.Header.Get("X-Content-Type-Options"), p)
	}
}

// /ws, /events and /api/ answer only to IP addresses, localhost and
// NOTIFIER_ALLOWED_HOSTS: a page that rebinds its DNS name to the
// notifier is same-origin with it, but its Host header gives it away.
func TestStreamsRefuseHostsNotAllowed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	n := start(t, b, map[string]string{"NOTIFIER_ALLOWED_HOSTS": "board.example,*.ops.example"})
	port := n.base[strings.LastIndex(n.base, ":"):]
	for host, ok := range map[string]bool{
		"127.0.0.1" + port:            true,
		"localhost" + port:            true,
		"[::1]" + port:                true,
		"board.example" + port:        true,
		"a.ops.example" + port:        true,
		"BOARD.EXAMPLE.":              true,
		"evil.example" + port:         false,
		"board.example.evil" + port:   false,
		"localhost.evil.example":      false,
		"rebind.attacker.test" + port: false,
	} {
		for _, p := range []string{"/events", "/ws", "/api/1/"} {
			req, err := http.NewRequest(http.MethodGet, n.base+p, nil)
			require.NoError(t, err)
			req.Host = host
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			var body map[string]string
			_ = json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if ok {
				require.NotEqual(t, "host not allowed", body["error"], host+p)
				continue
			}
			require.Equal(t, http.StatusForbidden, resp.StatusCode, host+p)
			require.Equal(t, "host not allowed", body["error"], host+p)
		}
	}
	// The board's files are not guarded: they hold nothing of the user's.
	req, _ := http.NewRequest(http.MethodGet, n.base+"/", nil)
	req.Host = "evil.example"
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}

// The board's POST through /api/ is same-origin: a browser that sends
// Origin without Sec-Fetch-Site is let through by the manager's check,
// which compares Origin with Host; the proxy once rewrote Host to the
// manager's address and the POST was refused as cross-origin.
func TestAPIProxyKeepsTheHostForTheManagersOriginCheck(t *testing.T) {
	t.Parallel()
	upstream := httptest.NewServer(http.NewCrossOriginProtection().Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
	})))
	t.Cleanup(upstream.Close)
	b := setup(t)
	n := start(t, b, map[string]string{"MANAGER_URL": upstream.URL})
	post := func(origin string) int {
		req, _ := http.NewRequest(http.MethodPost, n.base+"/api/", strings.NewReader(`{}`))
		req.Header.Set("Origin", origin)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	require.Equal(t, http.StatusCreated, post(n.base), "same-origin POST")
	require.Equal(t, http.StatusForbidden, post("https://evil.example"), "a foreign origin is still refused")
}

package deploycheck

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/testenv"
)

// TestFrontPassesClientAddress runs the real Caddy with the HTTP front's
// Caddyfile in front of the real manager and notifier, given the stack's
// environment with MANAGER_RATE_LIMIT on, and sends from several loopback
// addresses: each client gets its own rate-limit bucket, on the API's port
// and through the board's /api/ alike, and an X-Forwarded-For a client
// makes up does not move it into another bucket. Only the addresses
// change: the front listens on free loopback ports, the manager trusts
// 127.0.0.1 (the front's address here, as the stack's subnet is there),
// and the clients come from 127.0.0.2 and up, which it does not trust.
func TestFrontPassesClientAddress(t *testing.T) {
	t.Parallel()
	requireDocker(t)
	caddy, err := exec.LookPath("caddy")
	if err != nil {
		t.Skip("no caddy binary on PATH, so the front was not run; checkFronts still reads its Caddyfile")
	}
	st, token, envOf := stackEnvironment(t, stackFile, httpFile)
	require.NotEmpty(t, st.Services["manager"].Environment["MANAGER_TRUSTED_PROXIES"])
	menv := envOf("manager")
	menv["MANAGER_TRUSTED_PROXIES"] = "127.0.0.1"
	// One POST a second, a burst of two: the third in a row is refused.
	menv["MANAGER_RATE_LIMIT"] = "1"
	b := testenv.Setup(t)
	s := testenv.StartStack(t, b, testenv.StackOptions{Workers: -1, ManagerEnv: menv, NotifierEnv: envOf("notifier")})

	raw, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "http.Caddyfile"))
	require.NoError(t, err)
	text := string(raw)
	var ports [3]int
	for i := range ports {
		ports[i], err = testenv.FreePort()
		require.NoError(t, err)
	}
	apiPort, boardPort, healthPort := ports[0], ports[1], ports[2]
	for old, new := range map[string]string{
		"admin localhost:2019":        "admin off",
		"\n:8080 {":                   fmt.Sprintf("\nhttp://127.0.0.1:%d {", apiPort),
		"\n:8083 {":                   fmt.Sprintf("\nhttp://127.0.0.1:%d {", boardPort),
		"\n:8090 {":                   fmt.Sprintf("\nhttp://127.0.0.1:%d {", healthPort),
		"reverse_proxy manager:8080":  "reverse_proxy " + strings.TrimPrefix(s.ManagerURL, "http://"),
		"reverse_proxy notifier:8083": "reverse_proxy " + strings.TrimPrefix(s.NotifierURL, "http://"),
	} {
		require.Contains(t, text, old, "http.Caddyfile changed: update the addresses this test moves")
		text = strings.ReplaceAll(text, old, new)
	}
	conf := filepath.Join(t.TempDir(), "Caddyfile")
	require.NoError(t, os.WriteFile(conf, []byte(text), 0o644))
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, caddy, "run", "--adapter", "caddyfile", "--config", conf)
	cmd.Env = []string{"HOME=" + t.TempDir(), "XDG_DATA_HOME=" + t.TempDir(), "XDG_CONFIG_HOME=" + t.TempDir()}
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("caddy:\n%s", logs.String())
		}
	})
	require.Eventually(t, func() bool {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", healthPort))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 20*time.Second, 50*time.Millisecond, "caddy did not start")

	// post sends a job from the loopback address from, through the front's
	// port and path, with a made-up X-Forwarded-For when forged is set.
	post := func(from string, port int, path, forged string) int {
		client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			DialContext:       (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}).DialContext,
			DisableKeepAlives: true,
		}}
		req, err := http.NewRequest(http.MethodPost, fmt.Sprintf("http://127.0.0.1:%d%s", port, path), strings.NewReader(`{"example":"data"}`))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+token)
		if forged != "" {
			req.Header.Set("X-Forwarded-For", forged)
		}
		resp, err := client.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	// burst sends three POSTs in a row and returns their status codes; the
	// limiter refills one a second, so the third is refused if all three
	// count against one client.
	burst := func(from string, port int, path string, forge bool) []int {
		var codes []int
		for i := range 3 {
			forged := ""
			if forge {
				forged = "192.0.2." + strconv.Itoa(i+1)
			}
			codes = append(codes, post(from, port, path, forged))
		}
		return codes
	}
	limited := []int{http.StatusCreated, http.StatusCreated, http.StatusTooManyRequests}

	require.Equal(t, limited, burst("127.0.0.2", apiPort, "/", false), "API port, first client")
	require.Equal(t, http.StatusCreated, post("127.0.0.3", apiPort, "/", ""), "a second client shares the first one's bucket: the manager sees the front's address, not the clients'")
	require.Equal(t, limited, burst("127.0.0.4", apiPort, "/", true), "a client escaped its bucket with made-up X-Forwarded-For values")
	require.Equal(t, limited, burst("127.0.0.5", boardPort, "/api/", false), "board's /api/, first client")
	require.Equal(t, http.StatusCreated, post("127.0.0.6", boardPort, "/api/", ""), "board's /api/ calls share one bucket: the manager sees one address for all board users")

	// The rest of the board's port is the notifier's.
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", boardPort))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}

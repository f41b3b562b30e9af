package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/testenv"
)

// runTestSh runs deploy/test.sh (the original's bulk script) with args.
func runTestSh(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("deploy/test.sh needs curl, which is not installed")
	}
	root, err := testenv.RepoRoot()
	require.NoError(t, err)
	cmd := exec.Command("bash", append([]string{filepath.Join(root, "deploy", "test.sh")}, args...)...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return o.String(), e.String(), exit.ExitCode()
	}
	require.NoError(t, err)
	return o.String(), e.String(), 0
}

// fakeManager answers POST / as the manager's contract says, failing the
// request numbered failAt (0: never).
func fakeManager(t *testing.T, failAt int) (*httptest.Server, func() []string) {
	var mu sync.Mutex
	var bodies []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, string(b))
		n := len(bodies)
		mu.Unlock()
		if r.Method != http.MethodPost || r.URL.Path != "/" || r.Header.Get("Content-Type") != "application/json" || !json.Valid(b) {
			http.Error(w, `{"error":"bad request"}`, http.StatusBadRequest)
			return
		}
		if n == failAt {
			http.Error(w, `{"error":"queue unavailable"}`, http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"id":%d,"tube":"default","state":"ready"}`, 100+n)
	}))
	t.Cleanup(srv.Close)
	return srv, func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), bodies...) }
}

func TestTestShPrintsIDsOfRandomJobs(t *testing.T) {
	t.Parallel()
	srv, bodies := fakeManager(t, 0)
	out, errOut, code := runTestSh(t, strings.TrimPrefix(srv.URL, "http://"), "3")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "101\n102\n103\n", out)
	got := bodies()
	require.Len(t, got, 3)
	require.NotEqual(t, got[0], got[1], "payloads are random")
	for _, b := range got {
		var v map[string]any
		require.NoError(t, json.Unmarshal([]byte(b), &v), b)
	}
}

func TestTestShStopsAtAFailedRequest(t *testing.T) {
	t.Parallel()
	srv, bodies := fakeManager(t, 2)
	out, errOut, code := runTestSh(t, srv.URL, "5")
	require.Equal(t, 1, code)
	require.Equal(t, "101\n", out)
	require.Contains(t, errOut, "job 2 of 5")
	require.Contains(t, errOut, "503")
	require.Len(t, bodies(), 2, "nothing is sent after the failure")

	port, err := testenv.FreePort()
	require.NoError(t, err)
	_, errOut, code = runTestSh(t, fmt.Sprintf("127.0.0.1:%d", port), "1")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "request to")
}

func TestTestShUsage(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{}, {"localhost:8080"}, {"localhost:8080", "0"}, {"localhost:8080", "ten"},
		{"localhost:8080", "-1"}, {"", "3"}, {"localhost:8080", "3", "extra"}} {
		out, errOut, code := runTestSh(t, args...)
		require.Equal(t, 2, code, "args %q", args)
		require.Empty(t, out)
		require.Contains(t, errOut, "usage:", "args %q", args)
	}
}

func TestTestShAgainstTheManager(t *testing.T) {
	t.Parallel()
	st := testenv.StartStack(t, testenv.Setup(t), testenv.StackOptions{Workers: -1, NoNotifier: true})
	out, errOut, code := runTestSh(t, strings.TrimPrefix(st.ManagerURL, "http://"), "3")
	require.Equal(t, 0, code, errOut)
	ids := strings.Fields(out)
	require.Len(t, ids, 3)
	c := newHTTPClient(1)
	for _, s := range ids {
		id, err := strconv.ParseUint(s, 10, 64)
		require.NoError(t, err, "line %q is not a job id", s)
		body, err := getJob(context.Background(), c, st.ManagerURL, id)
		require.NoError(t, err)
		var stats struct {
			ID    uint64 `json:"id"`
			State string `json:"state"`
		}
		require.NoError(t, json.Unmarshal(body, &stats))
		require.Equal(t, id, stats.ID)
		require.Equal(t, "ready", stats.State, "no worker runs: the job waits")
	}
}

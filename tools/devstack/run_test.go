package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// TestRunStartsServesAndStopsTheStack runs devstack against the shared
// servers (which it finds answering, so it uses them) with the services on
// ports it chooses, sends a job through, and stops it as Ctrl-C does.
func TestRunStartsServesAndStopsTheStack(t *testing.T) {
	b := testenv.Setup(t)
	bin := filepath.Dir(testenv.Build(t, "./services/manager"))
	testenv.Build(t, "./services/worker")
	testenv.Build(t, "./services/notifier")
	env := map[string]string{
		"DEVSTACK_BIN": bin, "DEVSTACK_DATA": t.TempDir(), "DEVSTACK_WORKERS": "2",
		"BEANSTALK_HOST": b.Beanstalk.Host, "BEANSTALK_PORT": b.Vars()["BEANSTALK_PORT"],
		"MONGO_URL": b.Mongo.URL, "MONGO_DB": b.DB, "WORKER_TUBES": "default",
		"MANAGER_LISTEN_PORT": "0", "NOTIFIER_LISTEN_PORT": "0", "WORKER_METRICS_PORT": "0",
	}
	// The children inherit devstack's environment, as `make run` gives it.
	for k, v := range env {
		t.Setenv(k, v)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out testenv.LogBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, func(k string) string { return env[k] }, &out) }()

	require.Eventually(t, func() bool { return strings.Contains(out.String(), "The stack is up") },
		time.Minute, 50*time.Millisecond, "output:\n%s", out.String())
	require.Contains(t, out.String(), "beanstalkd already answers")
	require.Contains(t, out.String(), "MongoDB already answers")
	api := regexp.MustCompile(`API +(http://127\.0\.0\.1:\d+)/`).FindStringSubmatch(out.String())
	require.Len(t, api, 2, out.String())
	managerURL := api[1]

	resp, err := http.Post(managerURL, "application/json", strings.NewReader(`{"example":"data"}`))
	require.NoError(t, err)
	var put struct{ ID uint64 }
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&put))
	resp.Body.Close()
	require.Equal(t, http.StatusCreated, resp.StatusCode)
	require.Eventually(t, func() bool {
		resp, err := http.Get(managerURL + "/" + strconv.FormatUint(put.ID, 10) + "/")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var result struct{ Hash, Worker string }
		_ = json.NewDecoder(resp.Body).Decode(&result)
		return result.Hash != "" && strings.HasPrefix(result.Worker, "worker-")
	}, time.Minute, 100*time.Millisecond, "a worker of the stack completes the job; output:\n%s", out.String())
	require.Regexp(t, `(?m)^worker-1 +\| `, out.String(), "children's lines carry their names")

	t.Log("a service that dies is restarted, on the same port; the rest stays up")
	pid := childNamed(t, "manager")
	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	require.Eventually(t, func() bool { return strings.Contains(out.String(), "manager exited (code -1); restarting it in 1s") },
		30*time.Second, 50*time.Millisecond, "output:\n%s", out.String())
	require.Eventually(t, func() bool {
		resp, err := http.Get(managerURL + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, time.Minute, 100*time.Millisecond, "the manager answers again; output:\n%s", out.String())
	require.NotEqual(t, pid, childNamed(t, "manager"), "a new process")
	select {
	case err := <-done:
		t.Fatalf("devstack stopped when one service died: %v\n%s", err, out.String())
	default:
	}

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(time.Minute):
		t.Fatalf("devstack did not stop; output:\n%s", out.String())
	}
	require.Contains(t, out.String(), "stopping")
	_, err = http.Get(managerURL + "/healthz")
	require.Error(t, err, "the manager is gone once run returns")
}

// childNamed returns the pid of this process's child whose command is
// name.
func childNamed(t *testing.T, name string) int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	require.NoError(t, err)
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, err1 := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		stat, err2 := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err1 != nil || err2 != nil || strings.TrimSpace(string(comm)) != name {
			continue
		}
		// stat: pid (comm) state ppid ...
		f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(os.Getpid()) {
			return pid
		}
	}
	t.Fatalf("no child process %q", name)
	return 0
}

func TestLoadNamesEveryBadVariable(t *testing.T) {
	t.Chdir(t.TempDir()) // no .env
	env := map[string]string{"DEVSTACK_WORKERS": "0", "WORKER_METRICS_PORT": "x"}
	_, err := load(func(k string) string { return env[k] })
	require.ErrorContains(t, err, "DEVSTACK_WORKERS")
	require.ErrorContains(t, err, "WORKER_METRICS_PORT")
}

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/procs"
	"github.com/jobsys/jobs/pkg/queue"
	"github.com/jobsys/jobs/pkg/store"
	"github.com/jobsys/jobs/pkg/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// manager is run() going in-process.
type manager struct {
	URL  string
	Logs *testenv.LogBuffer
	stop context.CancelFunc
	// done is closed when run has returned err.
	done chan struct{}
	err  error
}

// Stop ends run's context and returns what run returned.
func (m *manager) Stop(t *testing.T) error {
	t.Helper()
	m.stop()
	select {
	case <-m.done:
		return m.err
	case <-time.After(15 * time.Second):
		t.Fatal("run did not return within 15s of its context ending")
		return nil
	}
}

// start runs the manager on a port of the system's choosing with env
// (over the bundle's servers) and waits until it listens.
func start(t *testing.T, getenv func(string) string, extra map[string]string) *manager {
	t.Helper()
	env := map[string]string{"MANAGER_LISTEN_HOST": "127.0.0.1", "MANAGER_LISTEN_PORT": "0"}
	for k, v := range extra {
		env[k] = v
	}
	m := &manager{Logs: &testenv.LogBuffer{}, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	m.stop = cancel
	addrs := make(chan net.Addr, 1)
	go func() {
		defer close(m.done)
		m.err = serve(ctx, func(k string) string {
			if v, ok := env[k]; ok {
				return v
			}
			return getenv(k)
		}, m.Logs, func(a net.Addr) { addrs <- a })
	}()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("manager log:\n%s", m.Logs.String())
		}
		require.NoError(t, m.Stop(t))
	})
	select {
	case a := <-addrs:
		m.URL = "http://" + a.String()
	case <-m.done:
		t.Fatalf("run returned before listening: %v\n%s", m.err, m.Logs.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("run did not listen within 20s\n%s", m.Logs.String())
	}
	return m
}

// runErr runs the manager expecting it to refuse to start.
func runErr(t *testing.T, getenv func(string) string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out testenv.LogBuffer
	err := serve(ctx, getenv, &out, func(net.Addr) { t.Errorf("run started listening") })
	require.Error(t, err, "run started; log:\n%s", out.String())
	return err
}

func request(t *testing.T, method, url, body string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	client := http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header, b
}

func postJob(t *testing.T, base, body string) uint64 {
	t.Helper()
	status, _, b := request(t, "POST", base+"/", body)
	require.Equal(t, http.StatusCreated, status, "%s", b)
	var c struct{ ID uint64 }
	require.NoError(t, json.Unmarshal(b, &c))
	return c.ID
}

func ctx(t *testing.T) context.Context { return testenv.Context(t, 20*time.Second) }

func TestRunServesTheSeedExample(t *testing.T) {
	t.Parallel()
	b := testenv.Setup(t)
	m := start(t, b.Env(nil), nil)
	status, hdr, body := request(t, "POST", m.URL, `{"example":"data"}`)
	require.Equal(t, http.StatusCreated, status, "%s", body)
	var c struct {
		ID    uint64 `json:"id"`
		Tube  string `json:"tube"`
		State string `json:"state"`
	}
	require.NoError(t, json.Unmarshal(body, &c))
	require.Equal(t, "default", c.Tube)
	require.Equal(t, "ready", c.State)
	status, _, body = request(t, "GET", m.URL+hdr.Get("Location"), "")
	require.Equal(t, http.StatusOK, status, "%s", body)
	require.Contains(t, string(body), `"state":"ready"`)
	status, _, body = request(t, "GET", m.URL+"/metrics", "")
	require.Equal(t, http.StatusOK, status)
	require.Contains(t, string(body), "manager_id_fences_total 0")
}

// TestRunFinishesRequestsInFlight: when the context ends, run stops
// taking connections, lets a request that has begun finish, and returns
// nil.
func TestRunFinishesRequestsInFlight(t *testing.T) {
	t.Parallel()
	b := testenv.Setup(t)
	m := start(t, b.Env(nil), map[string]string{"LOG_LEVEL": "info"})
	conn, err := net.Dial("tcp", strings.TrimPrefix(m.URL, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	body := `{"example":"data"}`
	// With Expect: 100-continue the server says when the handler starts
	// reading the body: the request is then in flight for sure.
	_, err = fmt.Fprintf(conn, "POST /?tube=%s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", b.Tube, len(body))
	require.NoError(t, err)
	r := bufio.NewReader(conn)
	line, err := r.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "HTTP/1.1 100 Continue\r\n", line)
	_, err = r.ReadString('\n')
	require.NoError(t, err)

	m.stop()
	require.Eventually(t, func() bool {
		c, err := net.DialTimeout("tcp", strings.TrimPrefix(m.URL, "http://"), 100*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err != nil
	}, 5*time.Second, 10*time.Millisecond, "the listener closes")
	select {
	case <-m.done:
		t.Fatalf("run returned with a request in flight: %v", m.err)
	default:
	}

	_, err = conn.Write([]byte(body))
	require.NoError(t, err)
	resp, err := http.ReadResponse(r, nil)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusCreated, resp.StatusCode)
	require.NoError(t, m.Stop(t))
	require.Contains(t, m.Logs.String(), "manager stopped")
}

func TestRunRefusesMaxJobSizeOverTheQueues(t *testing.T) {
	t.Parallel()
	b := testenv.Setup(t)
	bs := testenv.StartBeanstalkd(t, testenv.BeanstalkdOptions{MaxJobSize: 1000})
	getenv := b.Env(map[string]string{"BEANSTALK_PORT": strconv.Itoa(bs.Port), "MANAGER_LISTEN_PORT": "0"})
	err := runErr(t, getenv)
	require.Contains(t, err.Error(), "MAX_JOB_SIZE=65535 is larger than the max-job-size of 1000 bytes")

	m := start(t, getenv, map[string]string{"MAX_JOB_SIZE": "1000"})
	status, _, body := request(t, "POST", m.URL, `"`+strings.Repeat("x", 1000)+`"`)
	require.Equal(t, http.StatusRequestEntityTooLarge, status, "%s", body)
	require.Contains(t, string(body), "MAX_JOB_SIZE=1000")
}

func TestRunRefusesBadConfig(t *testing.T) {
	t.Parallel()
	b := testenv.Setup(t)
	err := runErr(t, b.Env(map[string]string{"MAX_JOB_SIZE": "lots", "MANAGER_LISTEN_PORT": "x", "API_TOKEN": "a", "API_TOKEN_FILE": "/x"}))
	for _, name := range []string{"MAX_JOB_SIZE", "MANAGER_LISTEN_PORT", "API_TOKEN_FILE"} {
		require.Contains(t, err.Error(), name)
	}
}

// TestRunStartsWithTheQueueDown: the manager runs and answers 503 until
// beanstalkd comes, then works without a restart.
func TestRunStartsWithTheQueueDown(t *testing.T) {
	t.Parallel()
	b := testenv.Setup(t)
	bs := testenv.StartBeanstalkd(t, testenv.BeanstalkdOptions{})
	bs.Stop()
	m := start(t, b.Env(map[string]string{"BEANSTALK_PORT": strconv.Itoa(bs.Port)}), nil)
	require.Contains(t, m.Logs.String(), "beanstalkd is not answering at start")

	status, _, _ := request(t, "GET", m.URL+"/healthz", "")
	require.Equal(t, http.StatusOK, status)
	status, _, body := request(t, "GET", m.URL+"/readyz", "")
	require.Equal(t, http.StatusServiceUnavailable, status)
	require.Contains(t, string(body), `"beanstalkd":"unreachable"`)
	startAt := time.Now()
	status, hdr, _ := request(t, "POST", m.URL, `{}`)
	require.Equal(t, http.StatusServiceUnavailable, status)
	require.Equal(t, "1", hdr.Get("Retry-After"))
	require.Less(t, time.Since(startAt), 2*time.Second)

	require.NoError(t, bs.Restart())
	require.Eventually(t, func() bool {
		status, _, _ := request(t, "POST", m.URL, `{}`)
		return status == http.StatusCreated
	}, 10*time.Second, 50*time.Millisecond)
	status, _, _ = request(t, "GET", m.URL+"/readyz", "")
	require.Equal(t, http.StatusOK, status)
}

// TestRunFencesIDsAfterRestartWithoutBinlog: beanstalkd restarts without
// its binlog under a running manager and counts ids from 1 again; GET of a
// new job must never answer an old job's result.
func TestRunFencesIDsAfterRestartWithoutBinlog(t *testing.T) {
	t.Parallel()
	b := testenv.Setup(t)
	bs := testenv.StartBeanstalkd(t, testenv.BeanstalkdOptions{})
	m := start(t, b.Env(map[string]string{"BEANSTALK_PORT": strconv.Itoa(bs.Port)}), nil)

	client, err := store.Connect(b.Mongo.URL, "manager-test", 2*time.Second)
	require.NoError(t, err)
	defer client.Disconnect(context.Background())
	results := store.NewResults(client, b.DB, "completed")
	pool := queue.NewPool(queue.PoolConfig{Addr: bs.Addr()})
	defer pool.Close()

	// Three jobs, done by a "worker": results stored, jobs deleted.
	var old []uint64
	for i := range 3 {
		payload := fmt.Sprintf(`{"old":%d}`, i)
		id := postJob(t, m.URL, payload)
		old = append(old, id)
		require.NoError(t, results.Save(ctx(t), job.Result{ID: id, Hash: job.Hash(payload), Payload: payload, CompletedAt: time.Now()}))
		require.NoError(t, pool.Delete(ctx(t), id))
	}
	require.Equal(t, []uint64{1, 2, 3}, old)

	bs.Stop()
	require.NoError(t, bs.Restart())

	var id uint64
	require.Eventually(t, func() bool {
		status, _, body := request(t, "POST", m.URL, `{"new":true}`)
		if status != http.StatusCreated {
			return false
		}
		var c struct{ ID uint64 }
		require.NoError(t, json.Unmarshal(body, &c))
		id = c.ID
		return true
	}, 10*time.Second, 50*time.Millisecond)
	require.Greater(t, id, uint64(3), "the new job's id is past every stored result")

	status, _, body := request(t, "GET", fmt.Sprintf("%s/%d/", m.URL, id), "")
	require.Equal(t, http.StatusOK, status)
	var s job.Stats
	require.NoError(t, json.Unmarshal(body, &s))
	require.Equal(t, job.StateReady, s.State, "%s", body)
	for i, o := range old {
		status, _, body := request(t, "GET", fmt.Sprintf("%s/%d/", m.URL, o), "")
		require.Equal(t, http.StatusOK, status)
		require.Contains(t, string(body), fmt.Sprintf(`"payload":"{\"old\":%d}"`, i), "old ids still answer their results")
	}
}

func TestRunRefusesOversizedHeaders(t *testing.T) {
	t.Parallel()
	b := testenv.Setup(t)
	m := start(t, b.Env(nil), nil)
	req, err := http.NewRequest("GET", m.URL+"/healthz", nil)
	require.NoError(t, err)
	req.Header.Set("X-Big", strings.Repeat("x", 64<<10))
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusRequestHeaderFieldsTooLarge, resp.StatusCode)
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"), "JSON like every error")
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.JSONEq(t, `{"error":"request headers are too large","detail":"the request line and headers may be up to 16384 bytes"}`, string(body))
}

// TestBinary builds the real manager, runs it as a child process, and
// checks that SIGTERM makes it exit 0.
func TestBinary(t *testing.T) {
	t.Parallel()
	b := testenv.Setup(t)
	bin := testenv.Build(t, "./services/manager")
	env := map[string]string{}
	for _, k := range []string{"BEANSTALK_HOST", "BEANSTALK_PORT", "MONGO_URL", "MONGO_DB", "LOG_FORMAT"} {
		env[k] = b.Env(nil)(k)
	}
	env["LOG_LEVEL"] = "info"
	svc := testenv.ServeService(t, bin, procs.Manager, env)
	base := svc.URL

	status, _, body := request(t, "GET", base+"/healthz", "")
	require.Equal(t, http.StatusOK, status)
	require.JSONEq(t, `{"status":"ok"}`, string(body))
	postJob(t, base, `{"example":"data"}`)

	svc.Signal(syscall.SIGTERM)
	select {
	case <-svc.Exited():
	case <-time.After(15 * time.Second):
		t.Fatal("the manager did not exit within 15s of SIGTERM")
	}
	require.Equal(t, 0, svc.ExitCode(), "%s", svc.Logs())
	require.Contains(t, svc.Logs(), "manager stopped")
}

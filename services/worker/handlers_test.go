package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/queue"
	"github.com/jobsys/jobs/pkg/store"
)

// script writes an executable file with body and returns its path.
func script(t *testing.T, name, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(path, []byte(body), 0o755))
	return path
}

func failureOf(b bundle, id uint64) (job.Failure, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return b.Store.Failures().Get(ctx, id)
}

// waitFailure waits until job id's failure record satisfies ok.
func waitFailure(t *testing.T, b bundle, id uint64, ok func(job.Failure) bool) job.Failure {
	t.Helper()
	var f job.Failure
	require.Eventually(t, func() bool {
		var err error
		f, err = failureOf(b, id)
		return err == nil && ok(f)
	}, 20*time.Second, 20*time.Millisecond, "job %d's failure record: last %+v", id, f)
	return f
}

// waitNoFailure waits until job id has no failure record: the worker
// removes it just after deleting the completed job.
func waitNoFailure(t *testing.T, b bundle, id uint64) {
	t.Helper()
	require.Eventually(t, func() bool {
		_, err := failureOf(b, id)
		return errors.Is(err, store.ErrNoFailure)
	}, 10*time.Second, 20*time.Millisecond, "job %d completed and kept its failure record", id)
}

// The first check, as a new user would write it: a Python
// program as a tube's handler, its JSON stored as the result.
func TestPythonProgramAsHandler(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 is not installed here; TestShellProgramResult covers exec handlers without it")
	}
	b := setup(t)
	shout := script(t, "shout.py", `#!/usr/bin/env python3
import json, os, sys
job = json.load(sys.stdin)
print(json.dumps({"upper": job["text"].upper(), "job_id": os.environ["JOB_ID"], "tube": os.environ["JOB_TUBE"]}))
`)
	startWorker(t, b.env(map[string]string{"WORKER_HANDLERS": b.Tube + ":exec:" + shout}))
	id := put(t, b, b.Tube, `{"text":"hello"}`, time.Minute)
	waitGone(t, b, id, 20*time.Second)
	r, err := find(b, id)
	require.NoError(t, err)
	require.Equal(t, fmt.Sprintf(`{"upper":"HELLO","job_id":"%d","tube":"%s"}`, id, b.Tube), string(r.Result))
	require.Empty(t, r.Hash)
	require.Equal(t, `{"text":"hello"}`, r.Payload)
}

// A shell program's stdout is the result; the md5 default still hashes
// the other tubes' jobs, byte for byte as the original did.
func TestShellProgramResult(t *testing.T) {
	t.Parallel()
	b := setup(t)
	other := b.Tube + "-md5"
	count := script(t, "count.sh", "#!/bin/sh\nprintf '{\"bytes\":%s,\"attempt\":%s}' \"$(wc -c | tr -d ' ')\" \"$JOB_ATTEMPT\"\n")
	startWorker(t, b.env(map[string]string{
		"WORKER_TUBES":    b.Tube + "," + other,
		"WORKER_HANDLERS": b.Tube + ":exec:" + count,
	}))
	id := put(t, b, b.Tube, `{"n":12345}`, time.Minute)
	seed := put(t, b, other, `{"example":"data"}`, time.Minute)
	waitGone(t, b, id, 20*time.Second)
	r, err := find(b, id)
	require.NoError(t, err)
	require.Equal(t, `{"bytes":11,"attempt":1}`, string(r.Result))
	waitGone(t, b, seed, 20*time.Second)
	r, err = find(b, seed)
	require.NoError(t, err)
	require.Equal(t, "09ee943c4fa33cd5a355eb7a4e38f7ef", r.Hash, "the seed's example")
	require.Nil(t, r.Result)
}

// The second check: a program that fails on stderr leaves a
// buried job whose failure record holds that text and the payload.
func TestFailingProgramIsRecordedAndBuried(t *testing.T) {
	t.Parallel()
	b := setup(t)
	fire := script(t, "fire.sh", "#!/bin/sh\necho 'disk on fire near rack 7' >&2\nexit 3\n")
	startWorker(t, b.env(map[string]string{
		"WORKER_HANDLERS":     b.Tube + ":exec:" + fire,
		"WORKER_MAX_ATTEMPTS": "2",
		"WORKER_RETRY_BASE":   "50ms",
		"WORKER_RETRY_MAX":    "100ms",
	}))
	id := put(t, b, b.Tube, `{"rack":7}`, time.Minute)
	waitState(t, b, id, job.StateBuried, 20*time.Second)
	f := waitFailure(t, b, id, func(f job.Failure) bool { return f.State == job.FailureBuried })
	require.Equal(t, "exit status 3: disk on fire near rack 7", f.Error)
	require.Equal(t, `{"rack":7}`, f.Payload)
	require.Equal(t, 2, f.Attempts)
	require.Equal(t, b.Tube, f.Tube)
	require.Equal(t, "test-worker", f.Worker)
	require.WithinDuration(t, time.Now(), f.FailedAt, time.Minute)
	_, err := find(b, id)
	require.ErrorIs(t, err, store.ErrNotFound)
}

// A failure record follows its job: written as "failed" on a failed
// attempt, updated on the next, and removed when a later attempt
// completes; a job that never failed gets none.
func TestFailureRecordThroughRetryAndCompletion(t *testing.T) {
	t.Parallel()
	b := setup(t)
	flag := filepath.Join(t.TempDir(), "broken")
	require.NoError(t, os.WriteFile(flag, nil, 0o644))
	flaky := script(t, "flaky.sh", "#!/bin/sh\nif [ -e '"+flag+"' ]; then echo \"attempt $JOB_ATTEMPT broke\" >&2; exit 1; fi\necho ok\n")
	startWorker(t, b.env(map[string]string{
		"WORKER_HANDLERS":     b.Tube + ":exec:" + flaky,
		"WORKER_MAX_ATTEMPTS": "10",
		"WORKER_RETRY_BASE":   "1s",
		"WORKER_RETRY_MAX":    "1s",
	}))
	id := put(t, b, b.Tube, `{"flaky":true}`, time.Minute)
	f := waitFailure(t, b, id, func(f job.Failure) bool { return f.Attempts >= 2 })
	require.Equal(t, job.FailureRetrying, f.State)
	require.Contains(t, f.Error, "broke")
	require.Equal(t, fmt.Sprintf("exit status 1: attempt %d broke", f.Attempts), f.Error)

	require.NoError(t, os.Remove(flag))
	waitGone(t, b, id, 20*time.Second)
	r, err := find(b, id)
	require.NoError(t, err)
	require.Equal(t, `"ok\n"`, string(r.Result))
	require.Greater(t, r.Attempts, f.Attempts)
	waitNoFailure(t, b, id)

	fine := put(t, b, b.Tube, `{"fine":true}`, time.Minute)
	waitGone(t, b, fine, 20*time.Second)
	n, err := b.Store.Failures().Collection().CountDocuments(context.Background(), map[string]any{})
	require.NoError(t, err)
	require.Zero(t, n)
}

// A buried job kicked back runs again: its record is updated if it fails
// again and removed when it completes.
func TestFailureRecordAfterKick(t *testing.T) {
	t.Parallel()
	b := setup(t)
	flag := filepath.Join(t.TempDir(), "broken")
	require.NoError(t, os.WriteFile(flag, nil, 0o644))
	flaky := script(t, "flaky.sh", "#!/bin/sh\nif [ -e '"+flag+"' ]; then echo broke >&2; exit 1; fi\necho '{\"fixed\":true}'\n")
	startWorker(t, b.env(map[string]string{
		"WORKER_HANDLERS":     b.Tube + ":exec:" + flaky,
		"WORKER_MAX_ATTEMPTS": "1",
	}))
	id := put(t, b, b.Tube, `{"kick":"me"}`, time.Minute)
	waitState(t, b, id, job.StateBuried, 20*time.Second)
	f := waitFailure(t, b, id, func(f job.Failure) bool { return f.State == job.FailureBuried })
	require.Equal(t, 1, f.Attempts)

	kick := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, b.Queue.Kick(ctx, id))
	}
	kick()
	waitState(t, b, id, job.StateBuried, 20*time.Second)
	f = waitFailure(t, b, id, func(f job.Failure) bool { return f.Attempts == 2 })
	require.Equal(t, job.FailureBuried, f.State, "buried again at once: past the last attempt")

	require.NoError(t, os.Remove(flag))
	kick()
	waitGone(t, b, id, 20*time.Second)
	r, err := find(b, id)
	require.NoError(t, err)
	require.Equal(t, 3, r.Attempts)
	require.Equal(t, `{"fixed":true}`, string(r.Result))
	waitNoFailure(t, b, id)
}

// Issue 24.7: reserves lost with their connection (a worker that gave up
// on a frozen beanstalkd) are not attempts. The job below is reserved
// four times by connections that close without a word, then run once.
func TestAttemptsCountRunsNotReserves(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := put(t, b, b.Tube, `{"once":true}`, time.Minute)
	for range 4 {
		c := queue.NewConsumer(b.Beanstalk.Addr(), []string{b.Tube}, 2*time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r, err := c.Reserve(ctx, time.Second)
		cancel()
		require.NoError(t, err)
		require.Equal(t, id, r.ID)
		require.NoError(t, c.Close())
		waitState(t, b, id, job.StateReady, 5*time.Second)
	}
	s, err := statsJob(b, id)
	require.NoError(t, err)
	require.EqualValues(t, 4, s.Reserves)

	startWorker(t, b.env(nil))
	waitGone(t, b, id, 20*time.Second)
	r, err := find(b, id)
	require.NoError(t, err)
	require.Equal(t, 1, r.Attempts, "run once")
}

// A program still running when the shutdown grace ends is killed with
// its children, and its job is handed back for another worker; the cut
// is not a failure of the job.
func TestSIGTERMKillsTheProgramInFlight(t *testing.T) {
	t.Parallel()
	b := setup(t)
	pidfile := filepath.Join(t.TempDir(), "pid")
	slow := script(t, "slow.sh", "#!/bin/sh\nsleep 1000 &\necho $! > '"+pidfile+"'\nwait\n")
	svc, metrics := startBinary(t, b, map[string]string{
		"WORKER_HANDLERS":       b.Tube + ":exec:" + slow,
		"WORKER_SHUTDOWN_GRACE": "1s",
	})
	id := put(t, b, b.Tube, `{"long":true}`, time.Minute)
	waitInFlight(t, metrics)
	var pid int
	require.Eventually(t, func() bool {
		data, err := os.ReadFile(pidfile)
		if err != nil {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(data)))
		return err == nil
	}, 10*time.Second, 20*time.Millisecond)

	took := sigterm(t, svc)
	require.Less(t, took, 5*time.Second)
	s, err := statsJob(b, id)
	require.NoError(t, err)
	require.Equal(t, job.StateReady, s.State)
	require.Eventually(t, func() bool {
		data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		return err != nil || strings.Contains(string(data), ") Z ")
	}, 5*time.Second, 20*time.Millisecond, "the program's child %d survived the worker", pid)
	_, err = failureOf(b, id)
	require.ErrorIs(t, err, store.ErrNoFailure)
}

// A program handler that cannot run stops the worker at start, naming
// the tube and the path.
func TestMissingProgramIsAConfigurationError(t *testing.T) {
	t.Parallel()
	b := setup(t)
	env := b.env(map[string]string{"WORKER_HANDLERS": "shout:exec:/nonexistent/shout.py"})
	err := run(context.Background(), func(k string) string { return env[k] }, &strings.Builder{})
	require.ErrorContains(t, err, `WORKER_HANDLERS: tube "shout": program "/nonexistent/shout.py": no such file or directory`)
}

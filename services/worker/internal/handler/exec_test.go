package handler_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/services/worker/internal/handler"
)

// program writes a shell script and returns its path.
func program(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "prog.sh")
	require.NoError(t, os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o755))
	return path
}

func runExec(t *testing.T, ctx context.Context, body string, o handler.ExecOptions, j handler.Job) (handler.Output, error) {
	t.Helper()
	return handler.Exec(program(t, body), o).Handle(ctx, j)
}

var ctxBg = context.Background()

// The program gets the payload on stdin and the job in its environment,
// and its JSON stdout is the result.
func TestExecResultAndEnvironment(t *testing.T) {
	t.Parallel()
	out, err := runExec(t, ctxBg, `printf '{"id":"%s","tube":"%s","attempt":%s,"token":"%s","in":' "$JOB_ID" "$JOB_TUBE" "$JOB_ATTEMPT" "$API_TOKEN"; cat; printf '}\n'`,
		handler.ExecOptions{Env: handler.SafeEnv([]string{"API_TOKEN=s3cret", "PATH=" + os.Getenv("PATH")})},
		handler.Job{ID: 42, Tube: "shout", Body: []byte(`{"text":"hello"}`), Attempt: 2, TTR: time.Minute})
	require.NoError(t, err)
	require.Equal(t, `{"id":"42","tube":"shout","attempt":2,"token":"","in":{"text":"hello"}}`, string(out.Result))
	require.Empty(t, out.ResultEncoding)
	require.Empty(t, out.Hash)

	out, err = runExec(t, ctxBg, `echo "3 files done"`, handler.ExecOptions{}, handler.Job{ID: 1})
	require.NoError(t, err)
	require.Equal(t, `"3 files done\n"`, string(out.Result), "text that is not JSON is stored as a string")

	out, err = runExec(t, ctxBg, `true`, handler.ExecOptions{}, handler.Job{ID: 1})
	require.NoError(t, err)
	require.Nil(t, out.Result, "no output, no result")
}

func TestSafeEnv(t *testing.T) {
	t.Parallel()
	got := handler.SafeEnv([]string{
		"API_TOKEN=abc", "API_TOKEN_FILE=/run/secrets/t", "HOME=/root",
		"MONGO_URL=mongodb://app:pa55@db:27017/?authSource=admin",
		"OTHER_URL=mongodb+srv://user@cluster/", "MONGO_BAD=mongodb://%zz",
	})
	require.Equal(t, []string{"HOME=/root", "MONGO_URL=mongodb://app@db:27017/?authSource=admin", "OTHER_URL=mongodb+srv://user@cluster/"}, got)
}

// A failure's error is the exit status and the end of stderr.
func TestExecFailure(t *testing.T) {
	t.Parallel()
	_, err := runExec(t, ctxBg, `echo "some progress"; echo "disk on fire near rack 7" >&2; exit 3`, handler.ExecOptions{}, handler.Job{ID: 1})
	require.EqualError(t, err, "exit status 3: disk on fire near rack 7")

	_, err = runExec(t, ctxBg, `kill -9 $$`, handler.ExecOptions{}, handler.Job{ID: 1})
	require.EqualError(t, err, "signal: killed")

	// Only the end of a long stderr is kept, from a whole character.
	_, err = runExec(t, ctxBg, `i=0; while [ $i -lt 2000 ]; do echo "é line $i" >&2; i=$((i+1)); done; exit 1`, handler.ExecOptions{}, handler.Job{ID: 1})
	require.Error(t, err)
	require.Less(t, len(err.Error()), 5000)
	require.True(t, strings.HasPrefix(err.Error(), "exit status 1: …"), err.Error()[:40])
	require.True(t, strings.HasSuffix(err.Error(), "é line 1999"))
}

// A run ends at the job's TTR less a margin, or at WORKER_EXEC_TIMEOUT
// when that is sooner.
func TestExecTimeouts(t *testing.T) {
	t.Parallel()
	start := time.Now()
	_, err := runExec(t, ctxBg, `echo started >&2; sleep 30`, handler.ExecOptions{}, handler.Job{ID: 1, TTR: time.Second})
	require.EqualError(t, err, "killed after 900ms (the job's TTR less a margin): started")
	require.Less(t, time.Since(start), 5*time.Second)

	start = time.Now()
	_, err = runExec(t, ctxBg, `sleep 30`, handler.ExecOptions{Timeout: 300 * time.Millisecond}, handler.Job{ID: 1, TTR: time.Minute})
	require.ErrorContains(t, err, "killed after 300ms (WORKER_EXEC_TIMEOUT)")
	require.Less(t, time.Since(start), 5*time.Second)
}

// alive reports whether pid is a process that has not exited.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// pid (comm) S ...: a zombie has exited.
	s := string(b)
	state := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])[0]
	return state != "Z"
}

func readPid(t *testing.T, path string) int {
	t.Helper()
	var pid int
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(path)
		if err != nil {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil
	}, 5*time.Second, 10*time.Millisecond)
	return pid
}

// The program's children die with it: on a timeout, and when it exits
// leaving one behind, even one holding stdout.
func TestExecKillsTheProcessGroup(t *testing.T) {
	t.Parallel()
	for name, c := range map[string]struct {
		script  string
		timeout time.Duration
	}{
		"timeout":       {`sleep 1000 & echo $! > "$PIDFILE"; wait`, 500 * time.Millisecond},
		"left behind":   {`sleep 1000 & echo $! > "$PIDFILE"; echo '{"ok":true}'`, 0},
		"holding pipes": {`(exec sleep 1000) & echo $! > "$PIDFILE"; exit 0`, 0},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			pidfile := filepath.Join(t.TempDir(), "pid")
			start := time.Now()
			_, err := runExec(t, ctxBg, c.script, handler.ExecOptions{Timeout: c.timeout, Env: []string{"PIDFILE=" + pidfile}}, handler.Job{ID: 1})
			if c.timeout > 0 {
				require.ErrorContains(t, err, "killed after")
			} else {
				require.NoError(t, err)
			}
			require.Less(t, time.Since(start), 1500*time.Millisecond, "no wait for the child's pipes")
			pid := readPid(t, pidfile)
			require.Eventually(t, func() bool { return !alive(pid) }, 5*time.Second, 10*time.Millisecond, "child %d still runs", pid)
		})
	}
}

// Output past the cap fails the run at once, without waiting for the
// program to end.
func TestExecHugeStdout(t *testing.T) {
	t.Parallel()
	start := time.Now()
	_, err := runExec(t, ctxBg, `exec yes`, handler.ExecOptions{MaxOutput: 1 << 20}, handler.Job{ID: 1, TTR: time.Minute})
	require.ErrorContains(t, err, "stdout is larger than WORKER_EXEC_MAX_OUTPUT")
	require.Less(t, time.Since(start), 10*time.Second)

	out, err := runExec(t, ctxBg, `head -c 1000 /dev/zero | tr '\0' a`, handler.ExecOptions{MaxOutput: 1000}, handler.Job{ID: 1})
	require.NoError(t, err, "exactly the cap is fine")
	require.Len(t, string(out.Result), 1002)
}

// A program that never reads its stdin still runs and finishes, however
// large the payload, and one that also never ends is still timed out.
func TestExecNeverReadsStdin(t *testing.T) {
	t.Parallel()
	big := []byte(`"` + strings.Repeat("x", 4<<20) + `"`)
	out, err := runExec(t, ctxBg, `echo '{"ok":true}'`, handler.ExecOptions{}, handler.Job{ID: 1, Body: big})
	require.NoError(t, err)
	require.Equal(t, `{"ok":true}`, string(out.Result))

	start := time.Now()
	_, err = runExec(t, ctxBg, `sleep 30`, handler.ExecOptions{Timeout: 300 * time.Millisecond}, handler.Job{ID: 1, Body: big})
	require.ErrorContains(t, err, "killed after 300ms")
	require.Less(t, time.Since(start), 5*time.Second)
}

// Output that is not UTF-8 is kept whole, in base64; stderr that is not
// becomes readable text.
func TestExecNonUTF8(t *testing.T) {
	t.Parallel()
	out, err := runExec(t, ctxBg, `printf '\377\376\000PNG'`, handler.ExecOptions{}, handler.Job{ID: 1})
	require.NoError(t, err)
	require.Equal(t, `"//4AUE5H"`, string(out.Result))
	require.Equal(t, job.EncodingBase64, out.ResultEncoding)

	_, err = runExec(t, ctxBg, `printf 'bad \377 byte' >&2; exit 2`, handler.ExecOptions{}, handler.Job{ID: 1})
	require.EqualError(t, err, "exit status 2: bad \uFFFD byte")
}

// The end of the shutdown grace cancels the run: the program is killed
// and the error says why.
func TestExecShutdownKills(t *testing.T) {
	t.Parallel()
	pidfile := filepath.Join(t.TempDir(), "pid")
	ctx, cancel := context.WithCancelCause(ctxBg)
	cause := errors.New("shutdown grace period is over")
	go func() {
		readPid(t, pidfile)
		cancel(cause)
	}()
	_, err := runExec(t, ctx, `echo $$ > "$PIDFILE"; sleep 1000`, handler.ExecOptions{Env: []string{"PIDFILE=" + pidfile}}, handler.Job{ID: 1, TTR: time.Hour})
	require.ErrorContains(t, err, "shutdown grace period is over")
	pid := readPid(t, pidfile)
	require.Eventually(t, func() bool { return !alive(pid) }, 5*time.Second, 10*time.Millisecond)
}

func TestCheckProgram(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain")
	require.NoError(t, os.WriteFile(plain, nil, 0o644))
	require.NoError(t, handler.CheckProgram(program(t, "true")))
	require.ErrorContains(t, handler.CheckProgram("rel/prog"), "must be absolute")
	require.ErrorIs(t, handler.CheckProgram(filepath.Join(dir, "none")), syscall.ENOENT)
	require.ErrorContains(t, handler.CheckProgram(plain), "is not executable")
	require.ErrorContains(t, handler.CheckProgram(dir), "is a directory")
}

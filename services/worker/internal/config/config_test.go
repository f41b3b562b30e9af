package config_test

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/services/worker/internal/config"
	"github.com/jobsys/jobs/services/worker/internal/handler"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	c, err := config.Load(env(nil), false)
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:11300", c.Beanstalk.Addr())
	require.Equal(t, "mongodb://127.0.0.1:27017", c.Mongo.URL)
	require.Equal(t, "jobs", c.Mongo.DB)
	require.Equal(t, "completed", c.Mongo.Collection)
	require.Equal(t, "json", c.Log.Format)
	require.Equal(t, "info", c.Log.Level)
	require.Equal(t, 1, c.Concurrency)
	require.Equal(t, []string{"default"}, c.Tubes)
	require.Equal(t, 5, c.MaxAttempts)
	require.Equal(t, handler.Delay{}, c.WorkDelay)
	require.Empty(t, c.Handlers)
	require.Equal(t, "", c.MetricsHost)
	require.Equal(t, 8084, c.MetricsPort)
	require.Equal(t, 30*time.Second, c.ShutdownGrace)
	require.Equal(t, time.Second, c.RetryBase)
	require.Equal(t, 5*time.Minute, c.RetryMax)
	require.Equal(t, 5*time.Second, c.StoreTimeout)
	host, _ := os.Hostname()
	require.Equal(t, host+":"+strconv.Itoa(os.Getpid()), c.WorkerID)
}

func TestValuesAreRead(t *testing.T) {
	t.Parallel()
	c, err := config.Load(env(map[string]string{
		"WORKER_CONCURRENCY":    "8",
		"WORKER_TUBES":          "b, a,b",
		"WORKER_MAX_ATTEMPTS":   "3",
		"WORK_DELAY":            "1s-5s",
		"WORKER_HANDLERS":       "a:fail, b:md5",
		"WORKER_METRICS_PORT":   "0",
		"WORKER_METRICS_HOST":   "127.0.0.1",
		"WORKER_SHUTDOWN_GRACE": "2",
		"WORKER_RETRY_BASE":     "50ms",
		"WORKER_RETRY_MAX":      "1s",
		"WORKER_ID":             "w-1",
		"WORKER_STORE_TIMEOUT":  "500ms",
		"LOG_FORMAT":            "text",
	}), false)
	require.NoError(t, err)
	require.Equal(t, 8, c.Concurrency)
	require.Equal(t, []string{"a", "b"}, c.Tubes)
	require.Equal(t, 3, c.MaxAttempts)
	require.Equal(t, handler.Delay{Min: time.Second, Max: 5 * time.Second}, c.WorkDelay)
	require.Equal(t, map[string]string{"a": "fail", "b": "md5"}, c.Handlers)
	require.Equal(t, 0, c.MetricsPort)
	require.Equal(t, "127.0.0.1", c.MetricsHost)
	require.Equal(t, 2*time.Second, c.ShutdownGrace)
	require.Equal(t, 50*time.Millisecond, c.RetryBase)
	require.Equal(t, time.Second, c.RetryMax)
	require.Equal(t, "w-1", c.WorkerID)
	require.Equal(t, 500*time.Millisecond, c.StoreTimeout)
	require.Equal(t, "text", c.Log.Format)

	c, err = config.Load(env(nil), false, "reverse", "thumbs")
	require.NoError(t, err)
	require.Equal(t, []string{"reverse", "thumbs"}, c.Tubes, "a program's own tubes are watched when WORKER_TUBES is unset")
	c, err = config.Load(env(map[string]string{"WORKER_TUBES": "x"}), false, "reverse")
	require.NoError(t, err)
	require.Equal(t, []string{"x"}, c.Tubes)
}

func TestBadValuesAreNamed(t *testing.T) {
	t.Parallel()
	cases := []struct {
		key, value, want string
	}{
		{"WORK_DELAY", "5s-1s", "ends before it starts"},
		{"WORK_DELAY", "abc", "want a duration"},
		{"WORK_DELAY", "-2s", "want a duration"},
		{"WORKER_HANDLERS", "x:nope", `unknown handler "nope"`},
		{"WORKER_HANDLERS", "novalue", "is not tube:handler"},
		{"WORKER_HANDLERS", "x:", "is not tube:handler"},
		{"WORKER_HANDLERS", "-x:md5", "must not start with a hyphen"},
		{"WORKER_HANDLERS", "x:md5,x:fail", "two handlers"},
		{"WORKER_CONCURRENCY", "0", "from 1 to 1024"},
		{"WORKER_CONCURRENCY", "1025", "from 1 to 1024"},
		{"WORKER_CONCURRENCY", "two", "whole number"},
		{"WORKER_TUBES", "-bad", "must not start with a hyphen"},
		{"WORKER_TUBES", "ok,sp ace", "only letters"},
		{"WORKER_TUBES", " , ", "lists nothing"},
		{"WORKER_MAX_ATTEMPTS", "0", "whole number"},
		{"WORKER_METRICS_PORT", "70000", "whole number"},
		{"WORKER_SHUTDOWN_GRACE", "soon", "not a duration"},
		{"WORKER_RETRY_BASE", "-1s", "not a duration"},
		{"WORKER_RETRY_MAX", "1ms", "less than WORKER_RETRY_BASE"},
		{"WORKER_STORE_TIMEOUT", "10ms", "at least 100ms"},
		{"BEANSTALK_PORT", "x", "whole number"},
		{"MONGO_URL", "http://x", "must start with mongodb://"},
		{"LOG_LEVEL", "loud", "not debug"},
	}
	for _, tc := range cases {
		t.Run(tc.key+"="+tc.value, func(t *testing.T) {
			t.Parallel()
			_, err := config.Load(env(map[string]string{tc.key: tc.value}), false)
			require.Error(t, err)
			require.ErrorContains(t, err, tc.key+": ")
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestEveryProblemIsReported(t *testing.T) {
	t.Parallel()
	_, err := config.Load(env(map[string]string{
		"WORKER_CONCURRENCY": "0",
		"WORKER_TUBES":       "-bad",
		"WORK_DELAY":         "abc",
		"WORKER_HANDLERS":    "novalue",
	}), false)
	require.Error(t, err)
	for _, key := range []string{"WORKER_CONCURRENCY", "WORKER_TUBES", "WORK_DELAY", "WORKER_HANDLERS"} {
		require.True(t, strings.Contains(err.Error(), key+": "), "%s missing from %v", key, err)
	}
}

// TestDotEnvIsRead changes the working directory, so it cannot run in
// parallel with the other tests of this package.
func TestDotEnvIsRead(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(dir+"/.env", []byte("WORKER_CONCURRENCY=4\nWORKER_ID=from-file\n"), 0o600))
	t.Chdir(dir)
	c, err := config.Load(env(map[string]string{"WORKER_ID": "from-env"}), false)
	require.NoError(t, err)
	require.Equal(t, 4, c.Concurrency)
	require.Equal(t, "from-env", c.WorkerID, "the real environment wins over .env")
}

// An exec handler names a program that exists and can run; anything else
// stops the worker at start, naming the tube and the path.
func TestExecHandlers(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	prog := dir + "/shout.py"
	require.NoError(t, os.WriteFile(prog, []byte("#!/bin/sh\n"), 0o755))
	plain := dir + "/notes.txt"
	require.NoError(t, os.WriteFile(plain, []byte("x"), 0o644))

	c, err := config.Load(env(map[string]string{
		"WORKER_HANDLERS":        "shout:exec:" + prog + ",x:md5",
		"WORKER_EXEC_TIMEOUT":    "90s",
		"WORKER_EXEC_MAX_OUTPUT": "2048",
		"RESULTS_TTL":            "168h",
	}), false)
	require.NoError(t, err)
	require.Equal(t, map[string]string{"shout": "exec:" + prog, "x": "md5"}, c.Handlers)
	require.Equal(t, 90*time.Second, c.ExecTimeout)
	require.Equal(t, 2048, c.ExecMaxOutput)
	require.Equal(t, 168*time.Hour, c.ResultsTTL)

	for value, want := range map[string]string{
		"shout:exec:shout.py":               `tube "shout": program "shout.py": the path must be absolute`,
		"shout:exec:" + dir + "/none":       `tube "shout": program "` + dir + `/none": no such file or directory`,
		"shout:exec:" + plain:               `tube "shout": program "` + plain + `" is not executable`,
		"shout:exec:" + dir:                 `tube "shout": program "` + dir + `" is a directory`,
		"shout:exec:":                       `tube "shout": program "": the path must be absolute`,
		"shout:exec:" + prog + ",shout:md5": "two handlers",
	} {
		_, err := config.Load(env(map[string]string{"WORKER_HANDLERS": value}), false)
		require.ErrorContains(t, err, "WORKER_HANDLERS: ", value)
		require.ErrorContains(t, err, want, value)
	}
	for key, value := range map[string]string{"RESULTS_TTL": "30s", "WORKER_EXEC_MAX_OUTPUT": "0", "WORKER_EXEC_TIMEOUT": "never"} {
		_, err := config.Load(env(map[string]string{key: value}), false)
		require.ErrorContains(t, err, key+": ", value)
	}
}

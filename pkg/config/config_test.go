package config_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/config"
)

func env(m map[string]string) config.Getenv { return func(k string) string { return m[k] } }

func TestDefaults(t *testing.T) {
	t.Parallel()
	r := config.NewReader(env(nil))
	require.Equal(t, "127.0.0.1:11300", r.Beanstalk().Addr())
	m := r.Mongo()
	require.Equal(t, config.Mongo{URL: "mongodb://127.0.0.1:27017", DB: "jobs", Collection: "completed", Server: "auto"}, m)
	require.NoError(t, r.Err())
}

func TestEveryBadValueIsNamed(t *testing.T) {
	t.Parallel()
	r := config.NewReader(env(map[string]string{
		"BEANSTALK_PORT": "70000",
		"MONGO_URL":      "http://x",
		"MONGO_SERVER":   "postgres",
		"D":              "-1s",
		"B":              "maybe",
		"L":              " , ",
	}))
	r.Beanstalk()
	r.Mongo()
	r.Duration("D", time.Second, 0)
	r.Bool("B", false)
	r.List("L", nil)
	err := r.Err()
	require.Error(t, err)
	for _, name := range []string{"BEANSTALK_PORT", "MONGO_URL", "MONGO_SERVER", "D:", "B:", "L:"} {
		require.Contains(t, err.Error(), name)
	}
}

func TestParseDuration(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]time.Duration{"30": 30 * time.Second, "0.5": 500 * time.Millisecond, "1m": time.Minute, "250ms": 250 * time.Millisecond} {
		got, err := config.ParseDuration(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "-1", "-2s", "abc", "1e300"} {
		_, err := config.ParseDuration(in)
		require.Error(t, err, in)
	}
}

func TestDotEnvUnderEnvironment(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), ".env")
	require.NoError(t, os.WriteFile(path, []byte("# comment\nBEANSTALK_HOST=queue\nMONGO_DB=\"fromfile\"\n"), 0o600))
	getenv, err := config.WithDotEnv(env(map[string]string{"MONGO_DB": "fromenv"}), path)
	require.NoError(t, err)
	require.Equal(t, "queue", getenv("BEANSTALK_HOST"))
	require.Equal(t, "fromenv", getenv("MONGO_DB"))

	_, err = config.WithDotEnv(env(nil), filepath.Join(t.TempDir(), "missing"))
	require.NoError(t, err)
}

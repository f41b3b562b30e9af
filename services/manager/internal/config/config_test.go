package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	pkgconfig "github.com/jobsys/jobs/pkg/config"
	"github.com/jobsys/jobs/services/manager/internal/config"
)

func env(m map[string]string) pkgconfig.Getenv { return func(k string) string { return m[k] } }

func TestDefaults(t *testing.T) {
	t.Parallel()
	c, err := config.Load(env(nil), false)
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:11300", c.Beanstalk.Addr())
	require.Equal(t, pkgconfig.Mongo{URL: "mongodb://127.0.0.1:27017", DB: "jobs", Collection: "completed", Server: "auto"}, c.Mongo)
	require.Equal(t, pkgconfig.Log{Format: "json", Level: "info"}, c.Log)
	require.Equal(t, "", c.ListenHost)
	require.Equal(t, 8080, c.ListenPort)
	require.Equal(t, ":8080", c.Addr())
	require.Equal(t, 65535, c.MaxJobSize)
	require.Equal(t, 60*time.Second, c.DefaultTTR)
	require.Empty(t, c.CORSOrigins)
	require.Empty(t, c.APIToken)
	require.False(t, c.ProtectReads)
	require.Zero(t, c.RateLimit)
	require.Empty(t, c.TrustedProxies)

	c, err = config.Load(env(nil), true)
	require.NoError(t, err)
	require.Equal(t, "text", c.Log.Format, "a terminal gets text logs")
}

func TestValues(t *testing.T) {
	t.Parallel()
	tokenFile := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(tokenFile, []byte("  s3cret-token\n"), 0o600))
	c, err := config.Load(env(map[string]string{
		"BEANSTALK_HOST":          "queue",
		"BEANSTALK_PORT":          "11301",
		"MANAGER_LISTEN_HOST":     "127.0.0.1",
		"MANAGER_LISTEN_PORT":     "9000",
		"MAX_JOB_SIZE":            "1024",
		"DEFAULT_TTR":             "2m",
		"MANAGER_CORS_ORIGINS":    "https://a.example, http://localhost:3000",
		"API_TOKEN_FILE":          tokenFile,
		"API_TOKEN_PROTECT_READS": "true",
		"MANAGER_RATE_LIMIT":      "2.5",
		"MANAGER_TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.7, ::1",
		"LOG_FORMAT":              "text",
		"LOG_LEVEL":               "debug",
	}), false)
	require.NoError(t, err)
	require.Equal(t, "queue:11301", c.Beanstalk.Addr())
	require.Equal(t, "127.0.0.1:9000", c.Addr())
	require.Equal(t, 1024, c.MaxJobSize)
	require.Equal(t, 2*time.Minute, c.DefaultTTR)
	require.Equal(t, []string{"https://a.example", "http://localhost:3000"}, c.CORSOrigins)
	require.Equal(t, "s3cret-token", c.APIToken, "the file's contents are trimmed")
	require.True(t, c.ProtectReads)
	require.Equal(t, 2.5, c.RateLimit)
	var nets []string
	for _, n := range c.TrustedProxies {
		nets = append(nets, n.String())
	}
	require.Equal(t, []string{"10.0.0.0/8", "192.168.1.7/32", "::1/128"}, nets)

	c, err = config.Load(env(map[string]string{"API_TOKEN": " tok ", "DEFAULT_TTR": "90", "MANAGER_LISTEN_HOST": "[::1]"}), false)
	require.NoError(t, err)
	require.Equal(t, "[::1]:8080", c.Addr())
	require.Equal(t, "tok", c.APIToken)
	require.Equal(t, 90*time.Second, c.DefaultTTR, "a bare number is seconds")
}

func TestEveryBadValueIsNamed(t *testing.T) {
	t.Parallel()
	emptyFile := filepath.Join(t.TempDir(), "empty")
	require.NoError(t, os.WriteFile(emptyFile, []byte("\n"), 0o600))
	cases := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"port", map[string]string{"MANAGER_LISTEN_PORT": "80000"}, "MANAGER_LISTEN_PORT"},
		{"port word", map[string]string{"MANAGER_LISTEN_PORT": "http"}, "MANAGER_LISTEN_PORT"},
		{"host", map[string]string{"MANAGER_LISTEN_HOST": "not a host"}, "MANAGER_LISTEN_HOST"},
		{"beanstalk port", map[string]string{"BEANSTALK_PORT": "0"}, "BEANSTALK_PORT"},
		{"mongo url", map[string]string{"MONGO_URL": "http://db"}, "MONGO_URL"},
		{"mongo db", map[string]string{"MONGO_DB": "a.b"}, "MONGO_DB"},
		{"mongo collection", map[string]string{"MONGO_COLLECTION": "system.x"}, "MONGO_COLLECTION"},
		{"max job size zero", map[string]string{"MAX_JOB_SIZE": "0"}, "MAX_JOB_SIZE"},
		{"max job size word", map[string]string{"MAX_JOB_SIZE": "big"}, "MAX_JOB_SIZE"},
		{"max job size huge", map[string]string{"MAX_JOB_SIZE": "99999999999"}, "MAX_JOB_SIZE"},
		{"ttr zero", map[string]string{"DEFAULT_TTR": "0"}, "DEFAULT_TTR"},
		{"ttr word", map[string]string{"DEFAULT_TTR": "soon"}, "DEFAULT_TTR"},
		{"ttr too long", map[string]string{"DEFAULT_TTR": "5000000000"}, "DEFAULT_TTR"},
		{"cors", map[string]string{"MANAGER_CORS_ORIGINS": "example.com"}, "MANAGER_CORS_ORIGINS"},
		{"cors blank", map[string]string{"MANAGER_CORS_ORIGINS": " , "}, "MANAGER_CORS_ORIGINS"},
		{"cors with a path", map[string]string{"MANAGER_CORS_ORIGINS": "https://a.example/board"}, "MANAGER_CORS_ORIGINS"},
		{"both tokens", map[string]string{"API_TOKEN": "a", "API_TOKEN_FILE": emptyFile}, "API_TOKEN_FILE"},
		{"missing token file", map[string]string{"API_TOKEN_FILE": "/nonexistent/token"}, "API_TOKEN_FILE"},
		{"empty token file", map[string]string{"API_TOKEN_FILE": emptyFile}, "API_TOKEN_FILE"},
		{"token with space", map[string]string{"API_TOKEN": "a b"}, "API_TOKEN"},
		{"protect reads", map[string]string{"API_TOKEN_PROTECT_READS": "maybe"}, "API_TOKEN_PROTECT_READS"},
		{"rate word", map[string]string{"MANAGER_RATE_LIMIT": "fast"}, "MANAGER_RATE_LIMIT"},
		{"rate negative", map[string]string{"MANAGER_RATE_LIMIT": "-1"}, "MANAGER_RATE_LIMIT"},
		{"rate nan", map[string]string{"MANAGER_RATE_LIMIT": "NaN"}, "MANAGER_RATE_LIMIT"},
		{"proxies", map[string]string{"MANAGER_TRUSTED_PROXIES": "10.0.0.0/33"}, "MANAGER_TRUSTED_PROXIES"},
		{"proxies word", map[string]string{"MANAGER_TRUSTED_PROXIES": "nginx"}, "MANAGER_TRUSTED_PROXIES"},
		{"log format", map[string]string{"LOG_FORMAT": "xml"}, "LOG_FORMAT"},
		{"log level", map[string]string{"LOG_LEVEL": "loud"}, "LOG_LEVEL"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := config.Load(env(tc.env), false)
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want+":")
		})
	}
}

func TestAllProblemsAtOnce(t *testing.T) {
	t.Parallel()
	_, err := config.Load(env(map[string]string{
		"MAX_JOB_SIZE": "-5", "DEFAULT_TTR": "x", "MANAGER_RATE_LIMIT": "y", "MANAGER_LISTEN_PORT": "z",
	}), false)
	require.Error(t, err)
	for _, name := range []string{"MAX_JOB_SIZE", "DEFAULT_TTR", "MANAGER_RATE_LIMIT", "MANAGER_LISTEN_PORT"} {
		require.Contains(t, err.Error(), name)
	}
	require.Equal(t, 4, strings.Count(err.Error(), "\n")+1, "one line per problem:\n%s", err)
}

// TestDotEnv changes the working directory, so it does not run in
// parallel.
func TestDotEnv(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, ".env"), []byte("MAX_JOB_SIZE=2048\nMANAGER_LISTEN_PORT=9999\n"), 0o600))
	t.Chdir(dir)
	c, err := config.Load(env(map[string]string{"MANAGER_LISTEN_PORT": "7000"}), false)
	require.NoError(t, err)
	require.Equal(t, 2048, c.MaxJobSize, ".env fills what the environment leaves unset")
	require.Equal(t, 7000, c.ListenPort, "the environment wins over .env")

	require.NoError(t, os.WriteFile(filepath.Join(dir, ".env"), []byte("BROKEN LINE WITHOUT EQUALS\n"), 0o600))
	_, err = config.Load(env(nil), false)
	require.Error(t, err)
}

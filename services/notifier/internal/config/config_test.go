package config_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/services/notifier/internal/config"
	"github.com/jobsys/jobs/services/notifier/internal/feed"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestDefaults(t *testing.T) {
	t.Parallel()
	c, err := config.Load(env(nil), false)
	require.NoError(t, err)
	require.Equal(t, ":8083", c.Addr())
	require.Equal(t, feed.ModeAuto, c.Mode)
	require.Equal(t, 250*time.Millisecond, c.FeedDelay)
	require.Equal(t, 2*time.Second, c.Lookback)
	require.Equal(t, 20*time.Second, c.PingInterval)
	require.Equal(t, 10000, c.ReplayLimit)
	require.Equal(t, 10000, c.MaxClients)
	require.Equal(t, 1024, c.ClientBuffer)
	require.Equal(t, 4, c.MaxReplays)
	require.Equal(t, 1_000_000, c.MaxWatches)
	require.Equal(t, 50, c.StatsTubes)
	require.Empty(t, c.AllowedOrigins)
	require.Equal(t, "http://127.0.0.1:8080", c.ManagerURL.String())
	require.Empty(t, c.BoardLinks)
	require.Empty(t, c.APIToken)
	host, _ := os.Hostname()
	require.Equal(t, host, c.ID)
	require.Equal(t, "json", c.Log.Format)
}

func TestValues(t *testing.T) {
	t.Parallel()
	c, err := config.Load(env(map[string]string{
		"NOTIFIER_LISTEN_HOST":     "127.0.0.1",
		"NOTIFIER_LISTEN_PORT":     "9000",
		"NOTIFIER_MODE":            "Poll",
		"NOTIFIER_POLL_INTERVAL":   "0.1",
		"NOTIFIER_POLL_LOOKBACK":   "5s",
		"NOTIFIER_PING_INTERVAL":   "45s",
		"NOTIFIER_ALLOWED_ORIGINS": "https://board.example.com, *.example.org",
		"NOTIFIER_ID":              "n7",
		"MANAGER_URL":              "https://manager:8443/base",
		"BOARD_LINKS":              "mongo-express=http://localhost:8081, beanstalk console=https://bc.example.com/x",
		"API_TOKEN":                "s3cret",
	}), true)
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:9000", c.Addr())
	require.Equal(t, feed.ModePoll, c.Mode)
	require.Equal(t, 100*time.Millisecond, c.FeedDelay)
	require.Equal(t, 5*time.Second, c.Lookback)
	require.Equal(t, 45*time.Second, c.PingInterval)
	require.Equal(t, []string{"https://board.example.com", "*.example.org"}, c.AllowedOrigins)
	require.Equal(t, "n7", c.ID)
	require.Equal(t, "https://manager:8443/base", c.ManagerURL.String())
	require.Equal(t, []config.Link{{Name: "mongo-express", URL: "http://localhost:8081"}, {Name: "beanstalk console", URL: "https://bc.example.com/x"}}, c.BoardLinks)
	require.Equal(t, "s3cret", c.APIToken)
	require.Equal(t, "text", c.Log.Format)
}

func TestTokenFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	require.NoError(t, os.WriteFile(file, []byte("  from-file\n"), 0o600))
	c, err := config.Load(env(map[string]string{"API_TOKEN_FILE": file}), false)
	require.NoError(t, err)
	require.Equal(t, "from-file", c.APIToken)
}

func TestBadValuesAreNamed(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	require.NoError(t, os.WriteFile(empty, []byte(" \n"), 0o600))
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"NOTIFIER_LISTEN_PORT": "99999"}, "NOTIFIER_LISTEN_PORT"},
		{map[string]string{"NOTIFIER_MODE": "stream"}, "NOTIFIER_MODE"},
		{map[string]string{"NOTIFIER_POLL_INTERVAL": "1ms"}, "NOTIFIER_POLL_INTERVAL"},
		{map[string]string{"NOTIFIER_POLL_INTERVAL": "soon"}, "NOTIFIER_POLL_INTERVAL"},
		{map[string]string{"NOTIFIER_POLL_LOOKBACK": "2h"}, "NOTIFIER_POLL_LOOKBACK"},
		{map[string]string{"NOTIFIER_FEED_DELAY": "1ms"}, "NOTIFIER_FEED_DELAY"},
		{map[string]string{"NOTIFIER_LOOKBACK": "2h"}, "NOTIFIER_LOOKBACK"},
		{map[string]string{"NOTIFIER_MAX_PENDING": "0"}, "NOTIFIER_MAX_PENDING"},
		{map[string]string{"NOTIFIER_REPLAY_MEMORY": "-1"}, "NOTIFIER_REPLAY_MEMORY"},
		{map[string]string{"NOTIFIER_ALLOWED_HOSTS": "[a-"}, "NOTIFIER_ALLOWED_HOSTS"},
		{map[string]string{"NOTIFIER_FRAME_ANCESTORS": "portal.example"}, "NOTIFIER_FRAME_ANCESTORS"},
		{map[string]string{"NOTIFIER_FRAME_ANCESTORS": "https://portal.example/x"}, "NOTIFIER_FRAME_ANCESTORS"},
		{map[string]string{"NOTIFIER_PING_INTERVAL": "50ms"}, "NOTIFIER_PING_INTERVAL"},
		{map[string]string{"NOTIFIER_PING_INTERVAL": "often"}, "NOTIFIER_PING_INTERVAL"},
		{map[string]string{"NOTIFIER_REPLAY_LIMIT": "0"}, "NOTIFIER_REPLAY_LIMIT"},
		{map[string]string{"NOTIFIER_MAX_CLIENTS": "many"}, "NOTIFIER_MAX_CLIENTS"},
		{map[string]string{"NOTIFIER_CLIENT_BUFFER": "0"}, "NOTIFIER_CLIENT_BUFFER"},
		{map[string]string{"NOTIFIER_MAX_REPLAYS": "0"}, "NOTIFIER_MAX_REPLAYS"},
		{map[string]string{"NOTIFIER_MAX_WATCHES": "lots"}, "NOTIFIER_MAX_WATCHES"},
		{map[string]string{"NOTIFIER_STATS_TUBES": "0"}, "NOTIFIER_STATS_TUBES"},
		{map[string]string{"NOTIFIER_ALLOWED_ORIGINS": "[a-"}, "NOTIFIER_ALLOWED_ORIGINS"},
		{map[string]string{"MANAGER_URL": "manager:8080"}, "MANAGER_URL"},
		{map[string]string{"MANAGER_URL": "ftp://manager"}, "MANAGER_URL"},
		{map[string]string{"BOARD_LINKS": "mongo-express"}, "BOARD_LINKS"},
		{map[string]string{"BOARD_LINKS": "x=javascript:alert(1)"}, "BOARD_LINKS"},
		{map[string]string{"BOARD_LINKS": "=http://a"}, "BOARD_LINKS"},
		{map[string]string{"API_TOKEN": "a", "API_TOKEN_FILE": empty}, "API_TOKEN_FILE"},
		{map[string]string{"API_TOKEN_FILE": empty}, "API_TOKEN_FILE"},
		{map[string]string{"API_TOKEN_FILE": filepath.Join(dir, "missing")}, "API_TOKEN_FILE"},
		{map[string]string{"API_TOKEN": "a b"}, "API_TOKEN"},
		{map[string]string{"API_TOKEN": "café"}, "API_TOKEN"},
		{map[string]string{"BEANSTALK_PORT": "0"}, "BEANSTALK_PORT"},
		{map[string]string{"MONGO_URL": "localhost"}, "MONGO_URL"},
		{map[string]string{"LOG_LEVEL": "loud"}, "LOG_LEVEL"},
	} {
		_, err := config.Load(env(tc.env), false)
		require.Error(t, err, "%v", tc.env)
		require.Contains(t, err.Error(), tc.want, "%v", tc.env)
	}

	// Every problem at once.
	_, err := config.Load(env(map[string]string{"NOTIFIER_MODE": "x", "MANAGER_URL": "y", "NOTIFIER_MAX_CLIENTS": "0"}), false)
	require.ErrorContains(t, err, "NOTIFIER_MODE")
	require.ErrorContains(t, err, "MANAGER_URL")
	require.ErrorContains(t, err, "NOTIFIER_MAX_CLIENTS")
}

// The settings are named for what they do in both modes; the old names,
// from when they were polling's, still work, and the new name wins.
func TestOldNamesOfTheFeedSettingsStillWork(t *testing.T) {
	t.Parallel()
	c, err := config.Load(env(map[string]string{"NOTIFIER_POLL_INTERVAL": "100ms", "NOTIFIER_POLL_LOOKBACK": "5s"}), false)
	require.NoError(t, err)
	require.Equal(t, 100*time.Millisecond, c.FeedDelay)
	require.Equal(t, 5*time.Second, c.Lookback)
	c, err = config.Load(env(map[string]string{"NOTIFIER_FEED_DELAY": "300ms", "NOTIFIER_POLL_INTERVAL": "100ms",
		"NOTIFIER_LOOKBACK": "3s", "NOTIFIER_POLL_LOOKBACK": "5s"}), false)
	require.NoError(t, err)
	require.Equal(t, 300*time.Millisecond, c.FeedDelay)
	require.Equal(t, 3*time.Second, c.Lookback)
}

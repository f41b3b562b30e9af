package config_test

import (
	"bytes"
	"net"
	"os"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/config"
)

func TestListenWithoutAPassedListenerBindsAddr(t *testing.T) {
	for name, env := range map[string]map[string]string{
		"no LISTEN_FDS":     {},
		"another process's": {"LISTEN_FDS": "1", "LISTEN_PID": strconv.Itoa(os.Getpid() + 1)},
	} {
		t.Run(name, func(t *testing.T) {
			l, err := config.Listen(func(k string) string { return env[k] }, "127.0.0.1:0")
			require.NoError(t, err)
			defer l.Close()
			require.NotEqual(t, 0, l.Addr().(*net.TCPAddr).Port)
		})
	}
}

func TestListenRefusesManyListeners(t *testing.T) {
	_, err := config.Listen(func(k string) string { return map[string]string{"LISTEN_FDS": "2"}[k] }, "127.0.0.1:0")
	require.ErrorContains(t, err, "LISTEN_FDS")
}

func TestIsTerminal(t *testing.T) {
	require.False(t, config.IsTerminal(&bytes.Buffer{}))
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	defer w.Close()
	require.False(t, config.IsTerminal(w), "a pipe is not a terminal")
	if tty, err := os.OpenFile("/dev/tty", os.O_WRONLY, 0); err == nil {
		defer tty.Close()
		require.True(t, config.IsTerminal(tty))
	}
}

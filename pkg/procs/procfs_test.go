package procs

import (
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestProcParsers(t *testing.T) {
	t.Parallel()
	stat := []byte("1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 8 0 100 0 0")
	d, err := parseStatCPU(stat)
	require.NoError(t, err)
	require.Equal(t, 3*time.Second, d, "(250+50) ticks at 100 Hz")
	_, err = parseStatCPU([]byte("1234 no parens"))
	require.Error(t, err)

	n, err := parseVmRSS([]byte("Name:\tx\nVmPeak:\t  9 kB\nVmRSS:\t   2048 kB\nThreads: 3\n"))
	require.NoError(t, err)
	require.Equal(t, int64(2048*1024), n)
	_, err = parseVmRSS([]byte("Name: x\n"))
	require.Error(t, err)

	self, err := CPUTime(os.Getpid())
	require.NoError(t, err)
	require.GreaterOrEqual(t, self, time.Duration(0))
	rss, err := RSS(os.Getpid())
	require.NoError(t, err)
	require.Positive(t, rss)
	busy, err := MachineBusy()
	require.NoError(t, err)
	require.Positive(t, busy)
}

package worker

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestBackoffDoublesUpToMax(t *testing.T) {
	t.Parallel()
	b := Backoff{Base: time.Second, Max: 5 * time.Minute}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second}
	for i, w := range want {
		require.Equal(t, w, b.Delay(i+1), "attempt %d", i+1)
	}
	require.Equal(t, 256*time.Second, b.Delay(9))
	require.Equal(t, 5*time.Minute, b.Delay(10))
	require.Equal(t, 5*time.Minute, b.Delay(1000), "no overflow")
	require.Equal(t, time.Second, b.Delay(0))
}

func TestJitterAddsUpToHalf(t *testing.T) {
	t.Parallel()
	b := Backoff{Base: 4 * time.Second, Max: time.Minute}
	seen := map[time.Duration]bool{}
	for range 500 {
		d := b.Jittered(1)
		require.GreaterOrEqual(t, d, 4*time.Second)
		require.LessOrEqual(t, d, 6*time.Second)
		require.Zero(t, d%time.Second, "beanstalkd counts whole seconds")
		seen[d] = true
	}
	require.Greater(t, len(seen), 1, "jitter should vary the delay")

	short := Backoff{Base: 50 * time.Millisecond, Max: time.Second}
	require.Less(t, short.Jittered(1), 80*time.Millisecond)
	require.Zero(t, Backoff{}.Jittered(3))
}

func TestOutageLogsOncePerOutage(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	o := newOutage(slog.New(slog.NewTextHandler(&buf, nil)), "beanstalkd")
	o.ok()
	for range 5 {
		o.fail(errors.New("connection refused"))
	}
	o.ok()
	o.ok()
	o.fail(errors.New("again"))
	out := buf.String()
	require.Equal(t, 2, strings.Count(out, "beanstalkd unavailable"), out)
	require.Equal(t, 1, strings.Count(out, "beanstalkd available again"), out)
}

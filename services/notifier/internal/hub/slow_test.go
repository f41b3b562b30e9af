package hub_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/testenv"
	"github.com/jobsys/jobs/services/notifier/internal/hub"
	"github.com/jobsys/jobs/services/notifier/internal/metrics"
)

// syncBuffer is a log sink safe for the hub's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// bigCompletions returns n results of size bytes each, ids from first.
func bigCompletions(first uint64, n, size int) []job.Result {
	p := `{"pad":"` + strings.Repeat("x", size) + `"}`
	now := time.Now().UTC()
	out := make([]job.Result, n)
	for i := range out {
		out[i] = job.Result{ID: first + uint64(i), Hash: job.Hash(p), Payload: p, Tube: "default", Attempts: 1, CompletedAt: now, StoredAt: now}
	}
	return out
}

// An SSE client that stops reading is dropped, counted and logged, for
// either reason: its queue overflowed (slow) or a write timed out.
func TestAnSSEClientThatStopsReadingIsDroppedCountedAndLogged(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		reason string
		buffer int
	}{
		{"write_timeout", 100_000}, // the queue never fills: the write times out
		{"slow", 8},
	} {
		t.Run(tc.reason, func(t *testing.T) {
			t.Parallel()
			m := metrics.New()
			logs := &syncBuffer{}
			s := serve(t, testenv.SetupClients(t), hub.Config{Metrics: m, Buffer: tc.buffer, WriteTimeout: 300 * time.Millisecond,
				Logger: slog.New(slog.NewTextHandler(logs, nil))})

			// A raw connection with a small receive buffer that reads the
			// headers and then nothing.
			conn, err := net.Dial("tcp", strings.TrimPrefix(s.base, "http://"))
			require.NoError(t, err)
			t.Cleanup(func() { _ = conn.Close() })
			require.NoError(t, conn.(*net.TCPConn).SetReadBuffer(4<<10))
			_, err = fmt.Fprintf(conn, "GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
			require.NoError(t, err)
			line, err := bufio.NewReader(conn).ReadString('\n')
			require.NoError(t, err)
			require.Contains(t, line, "200")
			require.Eventually(t, func() bool { return s.hub.Clients() == 1 }, 5*time.Second, 10*time.Millisecond)

			// 16 MiB: more than the socket buffers hold.
			for i := range 8 {
				s.hub.Completed(context.Background(), bigCompletions(uint64(i*32+1), 32, 64<<10))
			}
			require.Eventually(t, func() bool { return testutil.ToFloat64(m.Dropped.WithLabelValues(tc.reason)) == 1 },
				10*time.Second, 20*time.Millisecond, "dropped and counted as %s", tc.reason)
			require.Eventually(t, func() bool { return s.hub.Clients() == 0 }, 10*time.Second, 20*time.Millisecond)
			require.Contains(t, logs.String(), "closing it")
			require.Contains(t, logs.String(), "transport=sse")
		})
	}
}

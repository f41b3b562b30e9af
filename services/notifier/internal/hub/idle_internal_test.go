package hub

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/job"
)

// idleClientBudget is the most an idle WebSocket client subscribed to
// everything may cost the notifier, stack and live heap, in bytes. Two
// goroutines, net/http's 4 KB buffers and the request kept by the
// handler cost 31.5 KB here (16 KB stack, 15.5 KB heap); one goroutine
// with a 4 KB stack and small buffers 11 to 13 KB.
const idleClientBudget = 16 << 10

// An idle WebSocket client costs one goroutine and at most
// idleClientBudget bytes, before and after a broadcast: the writer that
// a completion starts is gone once it is written. The clients are raw
// sockets, so that none of the test's own goroutines or buffers count.
func TestAnIdleWebSocketClientIsCheap(t *testing.T) {
	const clients = 1000
	h := New(Config{})
	srv := httptest.NewServer(http.HandlerFunc(h.ServeWS))
	t.Cleanup(func() {
		srv.Close()
		_ = h.Shutdown(context.Background())
	})
	addr := strings.TrimPrefix(srv.URL, "http://")
	frame := clientFrame(`{"type":"subscribe","all":true}`)

	before := memory()
	g0 := runtime.NumGoroutine()
	conns := make([]net.Conn, clients)
	readers := make([]*bufio.Reader, clients)
	for i := range conns {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		_, err = fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
			"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
		require.NoError(t, err)
		br := bufio.NewReaderSize(c, 64) // the test's own memory counts too
		status, err := br.ReadString('\n')
		require.NoError(t, err)
		require.Contains(t, status, "101")
		for line := ""; line != "\r\n"; {
			line, err = br.ReadString('\n')
			require.NoError(t, err)
		}
		_, err = c.Write(frame)
		require.NoError(t, err)
		conns[i], readers[i] = c, br
	}
	require.Eventually(t, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.all) == clients
	}, 10*time.Second, 10*time.Millisecond, "every client subscribed")

	idle := func(when string) {
		t.Helper()
		var g int
		require.Eventually(t, func() bool {
			g = runtime.NumGoroutine() - g0
			return g <= clients+5
		}, 5*time.Second, 10*time.Millisecond, "%s: %d goroutines for %d clients", when, g, clients)
		per := float64(memory()-before) / clients
		t.Logf("%s: %d goroutines for %d idle clients, %.1f KB of stack and live heap each", when, g, clients, per/1024)
		budget := float64(idleClientBudget)
		if raceEnabled {
			budget *= 2
		}
		require.LessOrEqual(t, per, budget, when)
	}
	idle("subscribed")

	now := time.Now().UTC()
	h.Completed(context.Background(), []job.Result{{ID: 7, Hash: job.Hash("{}"), Payload: "{}", Tube: "default", Attempts: 1, CompletedAt: now, StoredAt: now}})
	for i, br := range readers {
		require.NoError(t, conns[i].SetReadDeadline(time.Now().Add(5*time.Second)))
		hdr := make([]byte, 2)
		_, err := br.Read(hdr[:1])
		require.NoError(t, err)
		_, err = br.Read(hdr[1:])
		require.NoError(t, err)
		require.Equal(t, byte(0x81), hdr[0], "client %d: one text frame", i)
		n := int(hdr[1] & 0x7f)
		if n == 126 {
			ext := make([]byte, 2)
			_, err = io.ReadFull(br, ext)
			require.NoError(t, err)
			n = int(ext[0])<<8 | int(ext[1])
		}
		body := make([]byte, n)
		_, err = io.ReadFull(br, body)
		require.NoError(t, err)
		require.Contains(t, string(body), `"id":7,"state":"completed"`, "client %d", i)
	}
	idle("after a completion to all")
}

// memory is the stack and live heap in use, after a collection.
func memory() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.StackInuse + ms.HeapAlloc
}

// A client that sends its first message right behind the handshake,
// without waiting for the answer, has it read: the bytes net/http read
// past the request move into the connection's small reader, or, when
// more than it holds, net/http's reader is kept.
func TestAMessageSentBehindTheHandshakeIsRead(t *testing.T) {
	h := New(Config{})
	srv := httptest.NewServer(http.HandlerFunc(h.ServeWS))
	t.Cleanup(func() {
		srv.Close()
		_ = h.Shutdown(context.Background())
	})
	for _, n := range []int{1, 300} { // 20 bytes, and 2 KB: more than wsReadBuffer
		ids := make([]string, n)
		for i := range ids {
			ids[i] = fmt.Sprint(1_000_000 + n*10_000 + i)
		}
		msg := `{"type":"subscribe","jobs":[` + strings.Join(ids, ",") + `]}`
		if n == 300 {
			require.Greater(t, len(msg), wsReadBuffer)
		}
		c, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		req := "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
			"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
		before := h.Watches()
		_, err = c.Write(append([]byte(req), clientFrame(msg)...)) // one write: both arrive together
		require.NoError(t, err)
		require.Eventually(t, func() bool { return h.Watches() == before+n }, 5*time.Second, 10*time.Millisecond,
			"%d ids subscribed behind the handshake", n)
	}
}

// clientFrame is a text frame as a client sends it: masked, with a zero
// key that leaves the payload as it is.
func clientFrame(msg string) []byte {
	f := []byte{0x81}
	if len(msg) < 126 {
		f = append(f, 0x80|byte(len(msg)))
	} else {
		f = append(f, 0x80|126, byte(len(msg)>>8), byte(len(msg)))
	}
	return append(append(f, 0, 0, 0, 0), msg...)
}

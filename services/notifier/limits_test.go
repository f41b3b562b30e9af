package main

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A request with more than 16 KiB of headers is answered 431, as by the
// manager: Go's default let each connection hold 1 MB.
func TestHeadersOver16KiBAre431(t *testing.T) {
	t.Parallel()
	n := start(t, setup(t), nil)
	for _, path := range []string{"/events", "/ws", "/"} {
		req, err := http.NewRequest(http.MethodGet, n.base+path, nil)
		require.NoError(t, err)
		req.Header.Set("X-Filler", strings.Repeat("x", 20<<10))
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err, path)
		resp.Body.Close()
		require.Equal(t, http.StatusRequestHeaderFieldsTooLarge, resp.StatusCode, path)
	}
}

// Connections that are not event streams (here: sending headers that
// never end) are bounded by NOTIFIER_MAX_PENDING: one past it is closed
// at once, event streams do not count, and a place freed serves the
// next connection.
func TestPendingConnectionsAreBounded(t *testing.T) {
	t.Parallel()
	n := start(t, setup(t), map[string]string{"NOTIFIER_MAX_PENDING": "4"})
	addr := strings.TrimPrefix(n.base, "http://")
	// An event stream does not hold a place.
	openSSE(t, n.base+"/events", nil)
	var held []net.Conn
	unfinished := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		_, err = io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
		require.NoError(t, err)
		return c
	}
	closedAtOnce := func(c net.Conn) bool {
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err := c.Read(make([]byte, 1))
		return err == io.EOF || (err != nil && !isTimeout(err))
	}
	stillOpen := func(c net.Conn) bool {
		_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		_, err := c.Read(make([]byte, 1))
		return isTimeout(err)
	}
	// The readiness probes of start leave idle connections, which count.
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	require.Eventually(t, func() bool {
		for _, c := range held {
			c.Close()
		}
		held = held[:0]
		for range 4 {
			held = append(held, unfinished())
		}
		for _, c := range held {
			if !stillOpen(c) {
				return false
			}
		}
		return closedAtOnce(unfinished())
	}, 10*time.Second, 100*time.Millisecond, "four connections are held and a fifth is closed")
	held[0].Close()
	require.Eventually(t, func() bool {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return false
		}
		defer c.Close()
		_, _ = io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 5*time.Second, 50*time.Millisecond, "a place freed serves the next")
}

func isTimeout(err error) bool {
	var ne net.Error
	ok := err != nil && errors.As(err, &ne) && ne.Timeout()
	return ok
}

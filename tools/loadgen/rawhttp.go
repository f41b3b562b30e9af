package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// httpConn is one keep-alive HTTP/1.1 connection that sends one request at
// a time, the way each of the raw floor's clients holds one beanstalkd
// connection. The closed-loop phases (ingest, lookups) use it instead of
// net/http's client: on a 2-core machine the load generator shares the
// CPU with the server it measures, and net/http's transport (a goroutine
// pair per connection, a channel hand-off and header maps per request)
// cost more CPU per request than a raw beanstalkd put, and took it from
// the server under test.
// What it does not need, it does not implement: no redirects, no
// compression, no proxies, no TLS. Answers are framed by Content-Length or
// chunked encoding; anything else is an error.
type httpConn struct {
	addr string // host:port
	host string // the Host header
	path string // the base URL's path, without a trailing slash
	nc   net.Conn
	r    *bufio.Reader
	w    []byte // the request being written
	body []byte // the last answer's body, reused
}

// newHTTPConn returns a connection to base (http://host:port); it dials on
// its first request and again after the server closes it.
func newHTTPConn(base string) (*httpConn, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, fmt.Errorf("parse %q: %w", base, err)
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("%s: the lean client speaks only http", base)
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	return &httpConn{addr: addr, host: u.Host, path: strings.TrimRight(u.Path, "/")}, nil
}

// Close closes the connection.
func (c *httpConn) Close() {
	if c.nc != nil {
		_ = c.nc.Close()
		c.nc = nil
	}
}

// do sends one request and returns the answer's status and body. The body
// is valid until the next call. A failed request closes the connection,
// so the next one starts on a fresh one.
func (c *httpConn) do(ctx context.Context, method, target, contentType string, body []byte) (int, []byte, error) {
	if c.nc == nil {
		d := net.Dialer{Timeout: 5 * time.Second}
		nc, err := d.DialContext(ctx, "tcp", c.addr)
		if err != nil {
			return 0, nil, fmt.Errorf("dial %s: %w", c.addr, err)
		}
		c.nc, c.r = nc, bufio.NewReaderSize(nc, 4096)
	}
	deadline := time.Now().Add(10 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = c.nc.SetDeadline(deadline)
	status, keep, err := c.roundTrip(method, target, contentType, body)
	if err != nil || !keep {
		c.Close()
	}
	if err != nil {
		if ctx.Err() != nil {
			return 0, nil, ctx.Err()
		}
		return 0, nil, fmt.Errorf("%s %s: %w", method, target, err)
	}
	return status, c.body, nil
}

func (c *httpConn) roundTrip(method, target, contentType string, body []byte) (status int, keep bool, err error) {
	w := append(c.w[:0], method...)
	w = append(w, ' ')
	w = append(w, target...)
	w = append(w, " HTTP/1.1\r\nHost: "...)
	w = append(w, c.host...)
	w = append(w, "\r\nUser-Agent: jobs-loadgen\r\n"...)
	if body != nil || method == "POST" {
		w = append(w, "Content-Type: "...)
		w = append(w, contentType...)
		w = append(w, "\r\nContent-Length: "...)
		w = strconv.AppendInt(w, int64(len(body)), 10)
		w = append(w, "\r\n"...)
	}
	w = append(w, "\r\n"...)
	w = append(w, body...)
	c.w = w
	if _, err := c.nc.Write(w); err != nil {
		return 0, false, err
	}
	return c.readAnswer(method)
}

// readAnswer reads a status line, the headers and the body.
func (c *httpConn) readAnswer(method string) (status int, keep bool, err error) {
	line, err := c.line()
	if err != nil {
		return 0, false, err
	}
	// "HTTP/1.1 201 Created"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return 0, false, fmt.Errorf("bad status line %q", line)
	}
	status, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, false, fmt.Errorf("bad status line %q", line)
	}
	keep = line[7] == '1'
	length, chunked := -1, false
	for {
		h, err := c.line()
		if err != nil {
			return 0, false, err
		}
		if len(h) == 0 {
			break
		}
		name, value, ok := bytes.Cut(h, []byte(":"))
		if !ok {
			return 0, false, fmt.Errorf("bad header %q", h)
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(value)); err != nil || length < 0 {
				return 0, false, fmt.Errorf("bad Content-Length %q", value)
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			if !bytes.EqualFold(value, []byte("chunked")) {
				return 0, false, fmt.Errorf("transfer encoding %q", value)
			}
			chunked = true
		case bytes.EqualFold(name, []byte("Connection")):
			if bytes.EqualFold(value, []byte("close")) {
				keep = false
			}
		}
	}
	c.body = c.body[:0]
	switch {
	case method == "HEAD" || status == 204 || status == 304 || status/100 == 1:
	case chunked:
		err = c.readChunked()
	case length >= 0:
		c.body = slices.Grow(c.body, length)[:length]
		_, err = io.ReadFull(c.r, c.body)
	default:
		return 0, false, errors.New("answer without Content-Length or chunked encoding")
	}
	return status, keep, err
}

func (c *httpConn) readChunked() error {
	for {
		line, err := c.line()
		if err != nil {
			return err
		}
		size, _, _ := bytes.Cut(line, []byte(";"))
		n, err := strconv.ParseUint(string(bytes.TrimSpace(size)), 16, 31)
		if err != nil {
			return fmt.Errorf("bad chunk size %q", line)
		}
		if n == 0 {
			for { // trailers, up to the blank line
				t, err := c.line()
				if err != nil {
					return err
				}
				if len(t) == 0 {
					return nil
				}
			}
		}
		start := len(c.body)
		c.body = slices.Grow(c.body, int(n))[:start+int(n)]
		if _, err := io.ReadFull(c.r, c.body[start:]); err != nil {
			return err
		}
		if crlf, err := c.line(); err != nil || len(crlf) != 0 {
			return fmt.Errorf("chunk not followed by CRLF")
		}
	}
}

// line reads one CRLF-terminated line without its end; it is valid until
// the next read.
func (c *httpConn) line() ([]byte, error) {
	l, err := c.r.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, errors.New("header line too long")
		}
		return nil, err
	}
	l = bytes.TrimSuffix(l[:len(l)-1], []byte("\r"))
	return l, nil
}

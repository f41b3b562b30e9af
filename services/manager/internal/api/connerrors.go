package api

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"strings"
)

// JSONErrors wraps l so that the answers net/http writes by itself, before
// any handler sees the request, are JSON like every other error: 431 for
// headers over maxHeaderBytes, 400 for a request that is not HTTP/1.1
// (no Host, a bad header line), 501 for an unknown transfer coding.
//
// net/http offers no hook for them: conn.serve writes each straight onto
// the connection, in one Write, in a fixed form ("HTTP/1.1 <status>" +
// errorHeaders + text, see net/http/server.go). The connection's Write
// recognises exactly that form, which no handler's answer can take (those
// go through a buffered writer that adds Date and sorts Connection before
// Content-Type), and writes the JSON answer instead. If a Go release
// changes the form, TestServerErrorsAreJSON fails and the answers are
// net/http's text again, never broken.
func JSONErrors(l net.Listener, maxHeaderBytes int) net.Listener {
	return jsonErrorListener{Listener: l, maxHeader: maxHeaderBytes}
}

type jsonErrorListener struct {
	net.Listener
	maxHeader int
}

func (l jsonErrorListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &jsonErrorConn{Conn: c, maxHeader: l.maxHeader}, nil
}

type jsonErrorConn struct {
	net.Conn
	maxHeader int
}

func (c *jsonErrorConn) Write(p []byte) (int, error) {
	if out, ok := rewriteServerError(p, c.maxHeader); ok {
		if _, err := c.Conn.Write(out); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// CloseWrite is passed on: net/http half-closes after a 431 so that the
// client reads the answer before the connection is reset.
func (c *jsonErrorConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// netHTTPErrorHeaders are the headers of net/http's own error answers.
const netHTTPErrorHeaders = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"

// rewriteServerError turns one of net/http's own error answers into the
// API's JSON form; ok is false for anything else.
func rewriteServerError(p []byte, maxHeader int) ([]byte, bool) {
	const proto = "HTTP/1.1 "
	if len(p) > 1024 || !bytes.HasPrefix(p, []byte(proto)) {
		return nil, false
	}
	line, text, found := bytes.Cut(p[len(proto):], []byte(netHTTPErrorHeaders))
	if !found || bytes.ContainsAny(line, "\r\n") || bytes.ContainsAny(text, "\r\n") || len(line) < 4 || line[3] != ' ' {
		return nil, false
	}
	code, err := strconv.Atoi(string(line[:3]))
	if err != nil || code < 400 || code > 599 || http.StatusText(code) == "" {
		return nil, false
	}
	e := Error{Status: code, Msg: strings.ToLower(http.StatusText(code))}
	// The status line may carry net/http's reason: "400 Bad Request:
	// missing required Host header".
	if _, why, ok := strings.Cut(string(line[4:]), ": "); ok {
		e.Detail = why
	}
	switch code {
	case http.StatusRequestHeaderFieldsTooLarge:
		e.Msg = "request headers are too large"
		e.Detail = "the request line and headers may be up to " + strconv.Itoa(maxHeader) + " bytes"
	case http.StatusNotImplemented:
		e.Detail = string(text)
	case http.StatusBadRequest:
		if e.Detail == "" {
			e.Detail = "the request is not well-formed HTTP/1.1"
		}
	}
	body, err := json.Marshal(e)
	if err != nil {
		return nil, false
	}
	body = append(body, '\n')
	var b bytes.Buffer
	b.WriteString(proto + strconv.Itoa(code) + " " + http.StatusText(code) + "\r\n")
	b.WriteString("Content-Type: application/json\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n")
	b.WriteString("Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n")
	b.Write(body)
	return b.Bytes(), true
}

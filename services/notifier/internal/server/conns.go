package server

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/jobsys/jobs/services/notifier/internal/metrics"
)

// MaxHeaderBytes bounds a request's headers, as the manager's do; more is
// a 431. Go's default is 1 MB per connection: 1,200 connections sending
// unfinished headers took the notifier to 1.27 GB.
const MaxHeaderBytes = 16 << 10

// HTTPServer returns the http.Server the notifier serves h with: bounded
// headers, a deadline to send them, idle connections closed after two
// minutes, and at most conns.Max connections that are not event streams
// (see Conns). No read or write timeout: event streams last for hours,
// and the hub bounds each write itself.
func HTTPServer(h http.Handler, conns *Conns, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    MaxHeaderBytes,
		ConnState:         conns.state,
		ConnContext:       conns.context,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}

// Conns bounds the connections that are not event streams: those sending
// their headers, waiting for an answer or idle between requests.
// NOTIFIER_MAX_CLIENTS counts event streams only, from the moment the hub
// admits them, so without this bound any number of connections could
// hold a header buffer each. A connection past the bound is closed as it
// is accepted.
//
// Memory: a pending connection holds at most MaxHeaderBytes plus net/http's
// buffers (some 40 KB all told), so the default of 1,000 bounds them to
// about 40 MB.
type Conns struct {
	max int
	m   *metrics.Metrics

	mu sync.Mutex
	// open holds every connection being served; true marks an event
	// stream, which the bound does not count.
	open    map[net.Conn]bool
	pending int
}

// NewConns returns a bound of max pending connections.
func NewConns(max int, m *metrics.Metrics) *Conns {
	return &Conns{max: max, m: m, open: map[net.Conn]bool{}}
}

type connKey struct{}

func (p *Conns) context(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

func (p *Conns) state(c net.Conn, s http.ConnState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	stream, known := p.open[c]
	switch s {
	case http.StateNew:
		if p.pending >= p.max {
			p.m.Rejected.WithLabelValues("max_pending").Inc()
			_ = c.Close() // net/http then ends it, and it never counted
			return
		}
		p.open[c] = false
		p.pending++
	case http.StateIdle:
		if known && stream { // a stream ended; the connection stays open
			p.open[c] = false
			p.pending++
		}
	case http.StateHijacked, http.StateClosed:
		if known {
			if !stream {
				p.pending--
			}
			delete(p.open, c)
		}
	}
}

// Admitted takes r's connection out of the bound: the hub has admitted it
// as a client, which NOTIFIER_MAX_CLIENTS counts.
func (p *Conns) Admitted(r *http.Request) {
	c, _ := r.Context().Value(connKey{}).(net.Conn)
	if c == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if stream, known := p.open[c]; known && !stream {
		p.open[c] = true
		p.pending--
	}
}

// Pending is the number of connections the bound counts.
func (p *Conns) Pending() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pending
}

package hub

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
)

// readLimit is the largest frame a client may send: a subscribe of
// MaxJobsPerMessage ids fits with room to spare, and a frame of 64 KiB
// closes the connection with 1009.
const readLimit = 64<<10 - 1

// wsWriter writes frames as WebSocket text messages and pings the peer
// between them.
type wsWriter struct {
	conn    *websocket.Conn
	timeout time.Duration
	// pingTimeout is how long a pong may take.
	pingTimeout time.Duration
}

func (w wsWriter) write(ctx context.Context, f *frame) error {
	// A write runs to its end or its timeout: cancelling a context that a
	// coder/websocket write waits on drops the TCP connection at once,
	// and then the close frame that shutdown sends next could not go out.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.timeout)
	defer cancel()
	return w.conn.Write(ctx, websocket.MessageText, f.data)
}

// heartbeat pings the peer and waits for its pong (the reader delivers
// it): a peer that does not answer in time is dead or stuck, and its
// connection is closed at once. A timer per client calls it (see
// wsSession), not a goroutine: an idle client has one goroutine, its
// reader, which matters with ten thousand of them.
func (w wsWriter) heartbeat(ctx context.Context) error {
	pctx, cancel := context.WithTimeout(ctx, w.pingTimeout)
	defer cancel()
	if err := w.conn.Ping(pctx); err != nil {
		if ctx.Err() == nil {
			_ = w.conn.CloseNow()
		}
		return fmt.Errorf("ping: %w", err)
	}
	return nil
}

// ServeWS upgrades to a WebSocket and serves one client until it leaves,
// falls behind, or the hub shuts down. ?since=<cursor> replays the
// completions after the cursor first, ?last=N the N most recent, and
// either subscribes the client to all of them.
//
// The handler returns once the client is set up: its goroutine, whose
// stack grew through the handshake, and the request go away, and the
// client is served by a wsSession.
func (h *Hub) ServeWS(w http.ResponseWriter, r *http.Request) {
	rq, ok := h.acceptReplay(w, r, false)
	if !ok {
		return
	}
	started := false
	defer func() {
		if !started {
			h.done(&rq)
		}
	}()
	if !h.admit(w, r) {
		return
	}
	defer func() {
		if !started {
			h.release()
		}
	}()
	if !checkUpgrade(w, r) {
		h.m.Rejected.WithLabelValues("bad_request").Inc()
		return
	}
	// No permessage-deflate (coder/websocket's default, said here on
	// purpose): a flate writer and reader cost tens of KB per connection,
	// and the events are small.
	conn, err := websocket.Accept(smallBuffers{w}, r, &websocket.AcceptOptions{
		InsecureSkipVerify: h.cfg.SkipOriginCheck,
		CompressionMode:    websocket.CompressionDisabled,
	})
	if err != nil {
		h.log.Debug("websocket handshake", "err", err)
		return // Accept answered
	}
	conn.SetReadLimit(readLimit)
	started = true
	h.startWS(conn, rq)
}

// The buffers of a WebSocket connection. net/http hands a hijacked
// connection over with a 4 KB reader and a 4 KB writer, and coder/websocket
// keeps them for the connection's life: with ten thousand clients that
// was 80 MB of the heap, twice that counting the garbage the collector
// lets grow in proportion. A client sends a subscribe now and then, so
// its reader can be small (a larger message is read straight into the
// message's buffer); a frame up to the writer's size goes out in one
// write, a larger one in two.
const (
	wsReadBuffer  = 512
	wsWriteBuffer = 2 << 10
)

// smallBuffers hijacks with the buffers above instead of net/http's.
type smallBuffers struct{ http.ResponseWriter }

func (w smallBuffers) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w smallBuffers) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	// Bytes the client sent right behind its handshake are in net/http's
	// reader: they move into the new one, which coder/websocket then
	// reads first (it takes what is buffered, not what its reader would
	// read next). More than fits keeps net/http's reader.
	pending := brw.Reader.Buffered()
	if pending > wsReadBuffer {
		return conn, bufio.NewReadWriter(brw.Reader, bufio.NewWriterSize(conn, wsWriteBuffer)), nil
	}
	b, _ := brw.Reader.Peek(pending)
	br := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(b), conn), wsReadBuffer)
	if pending > 0 {
		if _, err := br.Peek(pending); err != nil {
			_ = conn.Close()
			return nil, nil, fmt.Errorf("move the bytes read past the handshake: %w", err)
		}
	}
	return conn, bufio.NewReadWriter(br, bufio.NewWriterSize(conn, wsWriteBuffer)), nil
}

// wsSession serves one WebSocket client at the cost of one goroutine
// while it is idle, its reader (coder/websocket needs one to answer
// pings and see the close). Frames are written by a goroutine that
// enqueue starts when they arrive and that ends when the queue is empty,
// and the peer is pinged from a timer: with ten thousand idle clients a
// second goroutine each cost 10 to 20 KB of stack per client (the
// largest part of the notifier's memory).
type wsSession struct {
	h    *Hub
	c    *client
	conn *websocket.Conn
	w    wsWriter
	rq   replayRequest
	mem  *memoryReplay
	// ctx ends when the reader stops (the connection is gone) or at
	// shutdown; it bounds the replay's store queries and a ping.
	ctx    context.Context
	cancel context.CancelFunc

	closeOnce sync.Once
	// writers counts the writer and a ping in flight; each is added
	// under c.mu while the client is not dropped, so the reader, which
	// drops it under c.mu, then waits for all of them.
	writers sync.WaitGroup
	ping    *time.Timer
}

// startWS registers the client, starts the writer when there is a
// replay to send, and hands the connection to its reader goroutine. The
// client's place (admit) and replay place are the session's now.
func (h *Hub) startWS(conn *websocket.Conn, rq replayRequest) {
	s := &wsSession{h: h, conn: conn, rq: rq,
		w: wsWriter{conn: conn, timeout: h.cfg.WriteTimeout, pingTimeout: h.cfg.PingInterval}}
	s.ctx, s.cancel = context.WithCancel(h.ctx)
	c := h.newClient("ws", rq.wanted(), true)
	c.closeSlow = func() {
		// As in coder/websocket's chat example: the close frame goes out
		// behind the write in progress (bounded by the write timeout).
		s.closeWith(websocket.StatusPolicyViolation, "too slow: fell too far behind the events")
	}
	c.start = func() {
		s.writers.Add(1)
		go s.drain(false)
	}
	s.c = c
	replay := s.rq.wanted()
	// The replay goes first: live completions queue behind it, and no
	// other writer starts while it runs.
	c.writing = replay
	s.mem = h.add(c, &s.rq)
	if replay {
		s.writers.Add(1)
		go s.drain(true)
	}
	if h.cfg.PingInterval > 0 {
		c.mu.Lock() // heartbeat reads s.ping under c.mu
		s.ping = time.AfterFunc(h.cfg.PingInterval, s.heartbeat)
		c.mu.Unlock()
	}
	go s.run()
}

// run reads client messages until the connection ends, then closes it,
// waits for the writer and the ping, and unregisters the client.
func (s *wsSession) run() {
	h, c := s.h, s.c
	defer h.release()
	stop := context.AfterFunc(h.ctx, func() { s.closeWith(websocket.StatusGoingAway, "server shutting down") })
	h.read(s.ctx, s.conn, c, s.closeWith)
	stop()
	s.cancel()
	s.end()
	c.mu.Lock()
	c.dropped = true // nothing more is queued, and no writer or ping starts
	if s.ping != nil {
		s.ping.Stop()
	}
	c.mu.Unlock()
	s.writers.Wait()
	h.remove(c)
	h.done(&s.rq)
}

// end closes the connection: with 1001 at shutdown, else 1000 (a
// no-op when it was closed already, for being slow or by the peer).
func (s *wsSession) end() {
	if s.h.ctx.Err() != nil {
		s.closeWith(websocket.StatusGoingAway, "server shutting down")
	} else {
		s.closeWith(websocket.StatusNormalClosure, "")
	}
	_ = s.conn.CloseNow()
}

func (s *wsSession) closeWith(code websocket.StatusCode, reason string) {
	s.closeOnce.Do(func() { _ = s.conn.Close(code, reason) })
}

// fail ends the client after a failed write or ping; the reader then
// stops too.
func (s *wsSession) fail(err error) {
	if s.ctx.Err() == nil {
		s.h.log.Debug("websocket client ends", "err", err)
	}
	s.end()
}

// drain writes the replay, when first, and then the queued frames until
// the queue is empty.
func (s *wsSession) drain(replay bool) {
	defer s.writers.Done()
	h, c := s.h, s.c
	if replay {
		replayed, err := h.replay(s.ctx, c, s.w, &s.rq, s.mem)
		s.mem = nil
		h.done(&s.rq) // the live events that follow cost the store nothing
		if err != nil {
			s.fail(err)
			return
		}
		c.mu.Lock()
		c.told.sentByReplay(replayed, time.Now().Add(replayMemory))
		c.mu.Unlock()
	}
	for {
		fs := c.takeOrIdle()
		if fs == nil {
			return
		}
		if err := h.writeAll(s.ctx, c, s.w, fs); err != nil {
			s.fail(err)
			return
		}
	}
}

// heartbeat pings the peer (see wsWriter.heartbeat) and sets the timer
// for the next ping.
func (s *wsSession) heartbeat() {
	c := s.c
	c.mu.Lock()
	if c.dropped {
		c.mu.Unlock()
		return
	}
	s.writers.Add(1)
	c.mu.Unlock()
	defer s.writers.Done()
	if err := s.w.heartbeat(s.ctx); err != nil {
		s.fail(err)
		return
	}
	c.mu.Lock()
	if !c.dropped {
		s.ping.Reset(s.h.cfg.PingInterval)
	}
	c.mu.Unlock()
}

// read handles client messages until the connection fails. A bad
// message is answered with an error frame and the connection stays open;
// a text frame that is not UTF-8 closes it with 1007, as RFC 6455 §8.1
// requires. ctx bounds the work a message starts (state lookups).
func (h *Hub) read(ctx context.Context, conn *websocket.Conn, c *client, closeWith func(websocket.StatusCode, string)) {
	for {
		typ, b, err := conn.Read(context.Background())
		if err != nil {
			return
		}
		if typ == websocket.MessageText && !utf8.Valid(b) {
			closeWith(websocket.StatusInvalidFramePayloadData, "text frame is not valid UTF-8")
			return
		}
		// Decoding and handling a message take more stack than a reader
		// waiting for the next one, and a goroutine's stack does not
		// shrink back until a collection finds it mostly unused: they
		// run on a goroutine of their own, which ends with them. Ten
		// thousand readers that had each handled a subscribe themselves
		// held 8 KB stacks instead of 4 KB, 40 MB more.
		done := make(chan struct{})
		go func() {
			defer close(done)
			h.message(c, typ, b)
		}()
		<-done
	}
}

// message answers or applies one client message.
func (h *Hub) message(c *client, typ websocket.MessageType, b []byte) {
	if typ != websocket.MessageText {
		h.offer(c, errorFrame("binary frames are not understood: send JSON as text"), always)
		return
	}
	m, err := DecodeClientMessage(b)
	if err != nil {
		h.offer(c, errorFrame(err.Error()), always)
		return
	}
	h.handle(c, m)
}

// checkUpgrade answers a request that is no WebSocket handshake with the
// API's JSON error, as coder/websocket's Accept would in plain text: 426
// without the upgrade headers, 400 for a version or key it cannot take.
func checkUpgrade(w http.ResponseWriter, r *http.Request) bool {
	hasToken := func(name, token string) bool {
		for _, v := range r.Header.Values(name) {
			for part := range strings.SplitSeq(v, ",") {
				if strings.EqualFold(strings.TrimSpace(part), token) {
					return true
				}
			}
		}
		return false
	}
	switch {
	case !r.ProtoAtLeast(1, 1) || !hasToken("Connection", "upgrade") || !hasToken("Upgrade", "websocket"):
		w.Header().Set("Connection", "Upgrade")
		w.Header().Set("Upgrade", "websocket")
		writeError(w, http.StatusUpgradeRequired, "websocket upgrade required",
			"connect with a WebSocket client; for a plain HTTP stream use /events")
	case r.Header.Get("Sec-WebSocket-Version") != "13":
		w.Header().Set("Sec-WebSocket-Version", "13")
		writeError(w, http.StatusBadRequest, "unsupported websocket version", "only version 13 is spoken")
	case len(r.Header.Values("Sec-WebSocket-Key")) != 1:
		writeError(w, http.StatusBadRequest, "bad websocket handshake", "want one Sec-WebSocket-Key header")
	default:
		return true
	}
	return false
}

// writeError answers a refused request with the API's JSON error shape.
func writeError(w http.ResponseWriter, code int, msg, detail string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	body := map[string]string{"error": msg}
	if detail != "" {
		body["detail"] = detail
	}
	_ = json.NewEncoder(w).Encode(body)
}

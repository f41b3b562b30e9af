package hub

import (
	"context"
	"encoding/json"
	"fmt"
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
// connection is closed at once. Pinging from the writer's loop, not from
// a goroutine per client, keeps a client to two goroutines (reader and
// writer), which matters with ten thousand of them.
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
func (h *Hub) ServeWS(w http.ResponseWriter, r *http.Request) {
	rq, ok := h.acceptReplay(w, r, false)
	if !ok {
		return
	}
	defer h.done(&rq)
	if !h.admit(w, r) {
		return
	}
	defer h.release()
	if !checkUpgrade(w, r) {
		h.m.Rejected.WithLabelValues("bad_request").Inc()
		return
	}
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: h.cfg.SkipOriginCheck})
	if err != nil {
		h.log.Debug("websocket handshake", "err", err)
		return // Accept answered
	}
	conn.SetReadLimit(readLimit)

	c := h.newClient("ws", rq.wanted(), true)
	// ctx ends the writer: at shutdown, when the reader stops, or when
	// the connection is gone. Cancelling a context that a coder/websocket
	// call is waiting on closes the TCP connection at once, so reads run
	// under no context and end when the connection closes.
	ctx, cancel := context.WithCancel(h.ctx)
	defer cancel()
	var closeOnce sync.Once
	closeWith := func(code websocket.StatusCode, reason string) {
		closeOnce.Do(func() { _ = conn.Close(code, reason) })
	}
	c.closeSlow = func() {
		// As in coder/websocket's chat example: the close frame goes out
		// behind the write in progress (bounded by the write timeout).
		closeWith(websocket.StatusPolicyViolation, "too slow: fell too far behind the events")
	}
	mem := h.add(c, &rq)
	defer h.remove(c)

	var wg sync.WaitGroup
	wg.Go(func() {
		h.read(ctx, conn, c, closeWith)
		cancel()
	})

	ww := wsWriter{conn: conn, timeout: h.cfg.WriteTimeout, pingTimeout: h.cfg.PingInterval}
	if err := h.pump(ctx, c, ww, &rq, mem, h.cfg.PingInterval); err != nil && ctx.Err() == nil {
		h.log.Debug("websocket client ends", "err", err)
	}
	if h.ctx.Err() != nil {
		closeWith(websocket.StatusGoingAway, "server shutting down")
	} else {
		closeWith(websocket.StatusNormalClosure, "")
	}
	cancel()
	_ = conn.CloseNow()
	wg.Wait()
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
		if typ != websocket.MessageText {
			h.offer(c, errorFrame("binary frames are not understood: send JSON as text"), always)
			continue
		}
		if !utf8.Valid(b) {
			closeWith(websocket.StatusInvalidFramePayloadData, "text frame is not valid UTF-8")
			return
		}
		m, err := DecodeClientMessage(b)
		if err != nil {
			h.offer(c, errorFrame(err.Error()), always)
			continue
		}
		h.handle(c, m)
	}
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

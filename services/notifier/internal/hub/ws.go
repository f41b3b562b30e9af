package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
)

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
// completions after the cursor first and subscribes to all of them.
func (h *Hub) ServeWS(w http.ResponseWriter, r *http.Request) {
	rq, ok := h.acceptReplay(w, r, false)
	if !ok {
		return
	}
	defer rq.release()
	if !h.admit(w) {
		return
	}
	defer h.release()
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: h.cfg.SkipOriginCheck})
	if err != nil {
		h.log.Debug("websocket handshake", "err", err)
		return // Accept answered
	}
	conn.SetReadLimit(h.cfg.ReadLimit)

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
	h.add(c)
	defer h.remove(c)

	var wg sync.WaitGroup
	wg.Go(func() {
		h.read(ctx, conn, c)
		cancel()
	})

	ww := wsWriter{conn: conn, timeout: h.cfg.WriteTimeout, pingTimeout: h.cfg.PingInterval}
	if err := h.pump(ctx, c, ww, rq, h.cfg.PingInterval); err != nil && ctx.Err() == nil {
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
// message is answered with an error frame and the connection stays open.
// ctx bounds the work a message starts (state lookups).
func (h *Hub) read(ctx context.Context, conn *websocket.Conn, c *client) {
	for {
		typ, b, err := conn.Read(context.Background())
		if err != nil {
			return
		}
		if typ != websocket.MessageText {
			h.offer(c, errorFrame("binary frames are not understood: send JSON as text"))
			continue
		}
		m, err := DecodeClientMessage(b)
		if err != nil {
			h.offer(c, errorFrame(err.Error()))
			continue
		}
		h.handle(ctx, c, m)
	}
}

// writeError answers a refused request with the API's JSON error shape.
func writeError(w http.ResponseWriter, code int, msg, detail string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	body := map[string]string{"error": msg}
	if detail != "" {
		body["detail"] = detail
	}
	_ = json.NewEncoder(w).Encode(body)
}

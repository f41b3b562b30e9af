package hub

import (
	"bytes"
	"context"
	"net/http"
	"time"
)

// sseWriter writes frames as Server-Sent Events.
type sseWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

func (s sseWriter) send(b []byte) error {
	_ = s.rc.SetWriteDeadline(time.Now().Add(s.timeout))
	if _, err := s.w.Write(b); err != nil {
		return err
	}
	return s.rc.Flush()
}

func (s sseWriter) write(_ context.Context, f *frame) error {
	var b bytes.Buffer
	if f.cursor != "" && f.typ == "job" {
		b.WriteString("id: " + string(f.cursor) + "\n")
	}
	b.WriteString("event: " + f.typ + "\ndata: ")
	b.Write(f.data)
	b.WriteString("\n\n")
	return s.send(b.Bytes())
}

func (s sseWriter) heartbeat(context.Context) error { return s.send([]byte(": heartbeat\n\n")) }

// ServeSSE streams every completion as Server-Sent Events: "event: job",
// "id:" the cursor, data the same JSON as on the WebSocket. The
// Last-Event-ID header (sent by EventSource when it reconnects; rewound
// by the lookback), ?since= or ?last= replays first.
func (h *Hub) ServeSSE(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodHead {
		sseHeaders(w) // what a GET would get, without the stream
		return
	}
	rq, ok := h.acceptReplay(w, r, true)
	if !ok {
		return
	}
	defer h.done(&rq)
	if !h.admit(w, r) {
		return
	}
	defer h.release()

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(h.ctx, cancel)
	defer stop()

	c := h.newClient("sse", true, false)
	c.closeSlow = cancel
	mem := h.add(c, &rq)
	defer h.remove(c)

	sseHeaders(w)
	sw := sseWriter{w: w, rc: http.NewResponseController(w), timeout: h.cfg.WriteTimeout}
	// Reconnect after 2s, and say so before anything else.
	if err := sw.send([]byte("retry: 2000\n\n")); err != nil {
		return
	}
	_ = h.pump(ctx, c, sw, &rq, mem, h.cfg.PingInterval)
}

func sseHeaders(w http.ResponseWriter) {
	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("Cache-Control", "no-cache")
	hd.Set("X-Accel-Buffering", "no") // no proxy buffering
	w.WriteHeader(http.StatusOK)
}

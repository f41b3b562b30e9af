package hub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/queue"
	"github.com/jobsys/jobs/pkg/testenv"
	"github.com/jobsys/jobs/services/notifier/internal/hub"
)

// A client that subscribes to 3,000 queued jobs in three messages of
// 1,000, under its limit of watches, gets every answer and stays
// connected, though the answers are many more than its buffer of
// frames: it asked for them, it is not falling behind. It reads nothing
// until they are all queued (a small socket buffer, and a pause), so the
// answers cannot drain as they come.
func TestASubscribeBurstIsNotFallingBehind(t *testing.T) {
	t.Parallel()
	b := testenv.SetupClients(t)
	ctx := context.Background()
	var ids []uint64
	for i := range 3000 {
		id, err := b.Queue.Put(ctx, fmt.Appendf(nil, `{"n":%d}`, i), queue.PutOptions{Tube: b.Tube, TTR: time.Minute, Delay: time.Hour})
		require.NoError(t, err)
		ids = append(ids, id)
	}
	h := hub.New(hub.Config{Store: b.Store, SkipOriginCheck: true, Buffer: 64, MaxJobs: 3000})
	srv := httptest.NewServer(http.HandlerFunc(h.ServeWS))
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, h.Shutdown(sctx))
		srv.Close()
	})
	track(t, h, b, b.Store, 0)

	small := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err == nil {
			_ = c.(*net.TCPConn).SetReadBuffer(4 << 10)
		}
		return c, err
	}}}
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(dctx, "ws"+strings.TrimPrefix(srv.URL, "http"), &websocket.DialOptions{HTTPClient: small})
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.CloseNow() })
	for i := 0; i < len(ids); i += 1000 {
		msg, _ := json.Marshal(job.ClientMessage{Type: job.TypeSubscribe, Jobs: ids[i : i+1000]})
		require.NoError(t, conn.Write(dctx, websocket.MessageText, msg))
	}
	require.Eventually(t, func() bool { return h.Watches() == len(ids) }, 5*time.Second, 10*time.Millisecond)
	time.Sleep(2 * time.Second) // the tracker answers all of them meanwhile

	got := map[uint64]job.State{}
	rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
	defer rcancel()
	for len(got) < len(ids) {
		_, data, err := conn.Read(rctx)
		require.NoError(t, err, "after %d answers", len(got))
		var ev job.Event
		require.NoError(t, json.Unmarshal(data, &ev))
		if ev.Type == job.TypeJob {
			_, dup := got[ev.ID]
			require.False(t, dup, "job %d answered twice", ev.ID)
			got[ev.ID] = ev.State
		}
	}
	for _, id := range ids {
		require.Equal(t, job.StateDelayed, got[id], "job %d", id)
	}
	require.Equal(t, 1, h.Clients(), "still connected")
}

package hub_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/testenv"
	"github.com/jobsys/jobs/services/notifier/internal/hub"
)

// ?last=N sends the N most recent completions, oldest first, then live
// ones, with no repeat of those it sent.
func TestLastSendsTheMostRecentThenLive(t *testing.T) {
	t.Parallel()
	b := testenv.SetupClients(t)
	s := serve(t, b, hub.Config{})
	base := time.Now().Add(-time.Minute)
	for i := range uint64(20) {
		stored(t, b, base.Add(time.Duration(i)*time.Second), i+1)
	}
	c := s.dialWS(t, "?last=5")
	events := s.sse(t, "?last=5", nil)
	for _, want := range []uint64{16, 17, 18, 19, 20} {
		require.Equal(t, want, c.next(5*time.Second).ID)
		require.Equal(t, want, (<-events).ID)
	}
	// The feed delivers one the replay sent and a new one: only the new
	// one follows.
	rs := stored(t, b, time.Now(), 21)
	prev, _ := b.Store.FindMany(context.Background(), []uint64{20})
	s.hub.Completed(context.Background(), []job.Result{prev[20], rs[0]})
	require.Equal(t, uint64(21), c.next(5*time.Second).ID)
	require.Equal(t, uint64(21), (<-events).ID)
	c.quiet(300 * time.Millisecond)
}

package main

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/testenv"
)

// A notifier whose saved state holds a token the server cannot parse
// ({_data: "not a token"}, which MongoDB and devmongo answer with 9
// FailedToParse) starts a fresh stream, catches up from its saved
// cursor and delivers completions: before, it retried the token for
// ever and never became ready (issue 23).
func TestUnparsableSavedTokenStillDeliversCompletions(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id := "test-" + testenv.RandomName()
	now := time.Now()
	r1 := stamped(result(1, now), now)
	r2 := stamped(result(2, now.Add(time.Millisecond)), now.Add(time.Millisecond)) // stored while it was down
	require.NoError(t, b.insert(ctx, r1))
	require.NoError(t, b.insert(ctx, r2))
	_, err := b.Store.Collection().Database().Collection("notifier_state").InsertOne(ctx, bson.D{
		{Key: "_id", Value: id},
		{Key: "resume_token", Value: bson.D{{Key: "_data", Value: "not a token"}}},
		{Key: "cursor", Value: string(job.CursorOf(r1))},
		{Key: "updated_at", Value: now},
	})
	require.NoError(t, err)

	n := start(t, b, map[string]string{"NOTIFIER_ID": id, "NOTIFIER_MODE": "changestream"})
	c := dial(t, n.ws("?since="+string(job.CursorOf(r1))), nil)
	require.Equal(t, uint64(2), c.next(10*time.Second).ID, "the completion stored while it was down")
	b.complete(t, 3, 1)
	require.Equal(t, uint64(3), c.next(10*time.Second).ID, "a completion stored now")
	require.Contains(t, n.logs.String(), "not a valid hex string", "the server's answer is logged")
}

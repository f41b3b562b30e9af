package job_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/jobsys/jobs/pkg/job"
)

// A result decodes the same whether its _id is a number (MongoDB) or the
// decimal string package store keys it by on FerretDB, also inside a
// change event; an _id that is no job id is an error.
func TestResultDecodesEitherID(t *testing.T) {
	at := time.UnixMilli(1_700_000_000_123).UTC()
	want := job.Result{ID: 42, Hash: "h", Payload: "p", Tube: "t", Attempts: 2, CompletedAt: at, DurationMS: 1.5, StoredAt: at}
	numeric, err := bson.Marshal(want)
	require.NoError(t, err)
	var fields bson.D
	require.NoError(t, bson.Unmarshal(numeric, &fields))
	require.Equal(t, "_id", fields[0].Key)

	for name, id := range map[string]any{"int64": int64(42), "int32": int32(42), "string": "00000000000000000042", "short string": "42"} {
		fields[0].Value = id
		doc, err := bson.Marshal(fields)
		require.NoError(t, err)
		var got job.Result
		require.NoError(t, bson.Unmarshal(doc, &got), name)
		require.Equal(t, want, got, name)

		event, err := bson.Marshal(bson.D{{Key: "operationType", Value: "insert"}, {Key: "fullDocument", Value: bson.Raw(doc)}})
		require.NoError(t, err)
		var ev struct {
			FullDocument *job.Result `bson:"fullDocument"`
		}
		require.NoError(t, bson.Unmarshal(event, &ev), name)
		require.Equal(t, want, *ev.FullDocument, name)
	}

	fields[0].Value = "not-a-number"
	doc, err := bson.Marshal(fields)
	require.NoError(t, err)
	var got job.Result
	require.ErrorContains(t, bson.Unmarshal(doc, &got), "not a job id")
}

// A failure record decodes the same whether its _id is a number or the
// decimal string of package store's FerretDB layout; an _id that is no
// job id is an error.
func TestFailureDecodesEitherID(t *testing.T) {
	at := time.UnixMilli(1_700_000_000_123).UTC()
	want := job.Failure{ID: 42, Tube: "t", State: job.FailureBuried, Payload: "p", Error: "e", Attempts: 3, Worker: "w", FailedAt: at}
	numeric, err := bson.Marshal(want)
	require.NoError(t, err)
	var fields bson.D
	require.NoError(t, bson.Unmarshal(numeric, &fields))
	require.Equal(t, "_id", fields[0].Key)
	for name, id := range map[string]any{"int64": int64(42), "int32": int32(42), "string": "00000000000000000042"} {
		fields[0].Value = id
		doc, err := bson.Marshal(fields)
		require.NoError(t, err)
		var got job.Failure
		require.NoError(t, bson.Unmarshal(doc, &got), name)
		require.Equal(t, want, got, name)
	}
	fields[0].Value = "x42"
	doc, err := bson.Marshal(fields)
	require.NoError(t, err)
	var got job.Failure
	require.ErrorContains(t, bson.Unmarshal(doc, &got), "not a job id")
}

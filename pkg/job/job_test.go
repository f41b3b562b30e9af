package job_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/job"
)

func TestHashMatchesOriginal(t *testing.T) {
	t.Parallel()
	// The seed's documented example.
	require.Equal(t, "09ee943c4fa33cd5a355eb7a4e38f7ef", job.Hash(`{"example":"data"}`))
}

func TestJSONStringify(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{`{"a":"b"}`, `"{\"a\":\"b\"}"`},
		{"<>&", `"<>&"`},
		{"\u2028\u2029", "\"\u2028\u2029\""},
		{"a\\b", `"a\\b"`},
		{"\b\f\n\r\t", `"\b\f\n\r\t"`},
		{"\x00\x1f", `"\u0000\u001f"`},
		{"\x7f", "\"\x7f\""},
		{"é😀", `"é😀"`},
		{"a\xffb", "\"a\uFFFDb\""},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, job.JSONStringify(tt.in), "input %q", tt.in)
	}
}

func TestCursorRoundTrip(t *testing.T) {
	t.Parallel()
	at := time.UnixMilli(1_700_000_000_123).UTC()
	c := job.NewCursor(at, 42)
	require.Equal(t, job.Cursor("1700000000123-42"), c)
	gotT, gotID, err := c.Parse()
	require.NoError(t, err)
	require.True(t, at.Equal(gotT))
	require.Equal(t, uint64(42), gotID)

	for _, bad := range []string{"", "x", "1-", "-1", "a-1", "1-b", "-5-1"} {
		_, _, err := job.Cursor(bad).Parse()
		require.ErrorIs(t, err, job.ErrBadCursor, "cursor %q", bad)
	}
}

func TestResultJSONOrder(t *testing.T) {
	t.Parallel()
	b, err := json.Marshal(job.Result{ID: 1, Hash: "h", Payload: "p"})
	require.NoError(t, err)
	require.Equal(t, `{"_id":1,"hash":"h","payload":"p","duration_ms":0}`, string(b))
}

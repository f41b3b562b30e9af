package hub_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/services/notifier/internal/hub"
)

func TestDecodeClientMessage(t *testing.T) {
	t.Parallel()
	good := map[string]job.ClientMessage{
		`{"type":"subscribe","jobs":[1,2]}`:           {Type: "subscribe", Jobs: []uint64{1, 2}},
		`{"type":"subscribe","all":true}`:             {Type: "subscribe", All: true},
		` {"type":"unsubscribe","jobs":[1]} `:         {Type: "unsubscribe", Jobs: []uint64{1}},
		`{"type":"unsubscribe","all":true}`:           {Type: "unsubscribe", All: true},
		`{"all":true,"type":"subscribe"}`:             {Type: "subscribe", All: true},
		`{"type":"subscribe","jobs":[1],"all":false}`: {Type: "subscribe", Jobs: []uint64{1}},
	}
	for in, want := range good {
		got, err := hub.DecodeClientMessage([]byte(in))
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}

	bad := map[string]string{
		``:                                  "empty or cut short",
		`{`:                                 "empty or cut short",
		`nope`:                              "not valid JSON",
		`[1]`:                               "want a JSON object",
		`"subscribe"`:                       "want a JSON object",
		`null`:                              `"type" is missing`,
		`{}`:                                `"type" is missing`,
		`{"type":"hello","all":true}`:       `type "hello"`,
		`{"type":1,"all":true}`:             `"type" must be a string`,
		`{"type":"subscribe"}`:              `give "all": true or a list`,
		`{"type":"subscribe","all":false}`:  `give "all": true or a list`,
		`{"type":"subscribe","jobs":[]}`:    `"jobs" is empty`,
		`{"type":"subscribe","jobs":[0]}`:   "job ids start at 1",
		`{"type":"subscribe","jobs":[-1]}`:  `"jobs" must be a list of job ids`,
		`{"type":"subscribe","jobs":[1.5]}`: `"jobs" must be a list of job ids`,
		`{"type":"subscribe","jobs":["1"]}`: `"jobs" must be a list of job ids`,
		`{"type":"subscribe","jobs":1}`:     `"jobs" must be a list of job ids`,
		`{"type":"subscribe","all":"yes"}`:  `"all" must be true or false`,
		`{"type":"subscribe","job":[1]}`:    `unknown field "job"`,
		`{"type":"subscribe","all":true}{}`: "one JSON object per message",
		`{"type":"subscribe","all":true} x`: "one JSON object per message",
		`{"type":"subscribe","all":true,"jobs":[1]}`:         "not both",
		`{"type":"subscribe","jobs":[18446744073709551616]}`: `"jobs" must be a list of job ids`,
	}
	for in, want := range bad {
		_, err := hub.DecodeClientMessage([]byte(in))
		require.ErrorIs(t, err, hub.ErrBadMessage, in)
		require.ErrorContains(t, err, want, in)
	}

	ids := make([]string, hub.MaxJobsPerMessage+1)
	for i := range ids {
		ids[i] = "1"
	}
	_, err := hub.DecodeClientMessage([]byte(`{"type":"subscribe","jobs":[` + strings.Join(ids, ",") + `]}`))
	require.ErrorContains(t, err, "at most 1000")
}

// FuzzDecodeClientMessage checks that no input panics and that whatever
// is accepted is a well-formed message that survives a round trip.
func FuzzDecodeClientMessage(f *testing.F) {
	for _, s := range []string{
		`{"type":"subscribe","jobs":[1,2]}`, `{"type":"subscribe","all":true}`,
		`{"type":"unsubscribe","jobs":[1]}`, `{"type":"unsubscribe","all":true}`,
		`{"type":"subscribe","jobs":[]}`, `{"type":"subscribe","all":true}{}`, `{"type":1}`, `null`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := hub.DecodeClientMessage(b)
		if err != nil {
			require.ErrorIs(t, err, hub.ErrBadMessage)
			require.Zero(t, m.Type)
			return
		}
		require.Contains(t, []string{job.TypeSubscribe, job.TypeUnsubscribe}, m.Type)
		require.True(t, m.All != (len(m.Jobs) > 0), "all xor jobs: %+v", m)
		require.LessOrEqual(t, len(m.Jobs), hub.MaxJobsPerMessage)
		for _, id := range m.Jobs {
			require.NotZero(t, id)
		}
		again, err := json.Marshal(m)
		require.NoError(t, err)
		m2, err := hub.DecodeClientMessage(again)
		require.NoError(t, err)
		require.Equal(t, m, m2)
	})
}

package job_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/jobsys/jobs/pkg/job"
)

func TestValueOf(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, out, want, encoding string
	}{
		{"empty", "", "", ""},
		{"blank", " \n", "", ""},
		{"object, compacted", "{\"upper\": \"HELLO\",\n \"n\": 1}\n", `{"upper":"HELLO","n":1}`, ""},
		{"array", `[1, "a", null, true]`, `[1,"a",null,true]`, ""},
		{"number", "42\n", `42`, ""},
		{"JSON string", `"hi"`, `"hi"`, ""},
		{"plain text", "done: 3 files\n", `"done: 3 files\n"`, ""},
		{"two JSON values are text", `{} {}`, `"{} {}"`, ""},
		{"$ key is kept as text", `{"$set":1}`, `"{\"$set\":1}"`, ""},
		{"dotted key is kept as text", `{"a":{"b.c":1}}`, `"{\"a\":{\"b.c\":1}}"`, ""},
		{"$ in a value is fine", `{"a":"$b.c"}`, `{"a":"$b.c"}`, ""},
		{"not UTF-8", "\xff\xfe\x00", `"//4A"`, job.EncodingBase64},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, enc := job.ValueOf([]byte(tc.out))
			require.Equal(t, tc.want, string(v))
			require.Equal(t, tc.encoding, enc)
		})
	}
}

// A result goes to BSON as the types its JSON reads as, in key order,
// and comes back as the same JSON.
func TestValueBSONRoundTrip(t *testing.T) {
	t.Parallel()
	for _, js := range []string{
		`{"upper":"HELLO","n":1,"z":{"b":2,"a":[1.5,-3,true,null,"x"]}}`,
		`[9223372036854775807,-9223372036854775808,123456789012345678901234567890]`,
		`"just text <&>"`,
		`3.25`, `1e+21`, `{}`, `[]`, `false`,
	} {
		r := job.Result{ID: 1, Payload: "{}", Result: job.Value(js)}
		doc, err := bson.Marshal(r)
		require.NoError(t, err, js)
		var back job.Result
		require.NoError(t, bson.Unmarshal(doc, &back), js)
		require.Equal(t, js, string(back.Result))
	}

	r := job.Result{ID: 1, Payload: "{}", Result: job.Value(`{"upper":"HELLO","n":1,"big":123456789012345678901234567890}`)}
	doc, err := bson.Marshal(r)
	require.NoError(t, err)
	raw := bson.Raw(doc).Lookup("result")
	require.Equal(t, bson.TypeEmbeddedDocument, raw.Type, "stored as a document the database can query")
	require.Equal(t, "HELLO", raw.Document().Lookup("upper").StringValue())
	require.Equal(t, bson.TypeInt64, raw.Document().Lookup("n").Type)
	require.Equal(t, bson.TypeDecimal128, raw.Document().Lookup("big").Type)
	keys, err := raw.Document().Elements()
	require.NoError(t, err)
	require.Equal(t, "upper", keys[0].Key(), "key order kept")
}

// No result leaves no field, in BSON and in JSON, so md5's documents are
// the original's.
func TestNoValueNoField(t *testing.T) {
	t.Parallel()
	r := job.Result{ID: 1, Hash: job.Hash("{}"), Payload: "{}"}
	doc, err := bson.Marshal(r)
	require.NoError(t, err)
	_, err = bson.Raw(doc).LookupErr("result")
	require.Error(t, err)
	js, err := json.Marshal(r)
	require.NoError(t, err)
	require.NotContains(t, string(js), "result")

	var back job.Result
	require.NoError(t, json.Unmarshal([]byte(`{"_id":1,"payload":"{}","result":{"a": [1, 2]}}`), &back))
	require.Equal(t, `{"a":[1,2]}`, string(back.Result))
	js, err = json.Marshal(back)
	require.NoError(t, err)
	require.Contains(t, string(js), `"result":{"a":[1,2]}`)
}

// The notifier's completion event carries the handler's result.
func TestCompletedEventCarriesResult(t *testing.T) {
	t.Parallel()
	e := job.Completed(job.Result{ID: 3, Payload: `{"text":"hello"}`, Result: job.Value(`{"upper":"HELLO"}`)})
	js, err := json.Marshal(e)
	require.NoError(t, err)
	require.Contains(t, string(js), `"result":{"_id":3,"payload":"{\"text\":\"hello\"}","result":{"upper":"HELLO"}`)
}

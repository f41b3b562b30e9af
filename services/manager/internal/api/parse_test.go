package api_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/services/manager/internal/api"
)

var limits = api.PutLimits{MaxJobSize: 100, DefaultTTR: time.Minute}

func TestParsePutDefaultsAndOptions(t *testing.T) {
	t.Parallel()
	p, err := api.ParsePut([]byte(" {\n  \"example\" : \"da ta\" ,\n \"n\": [1, 2]\n}\n"), nil, limits)
	require.NoError(t, err)
	require.Equal(t, api.PutRequest{Body: []byte(`{"example":"da ta","n":[1,2]}`), Tube: "default", TTR: time.Minute}, p)

	q := url.Values{"tube": {"emails"}, "priority": {"4294967295"}, "delay": {"1.5"}, "ttr": {"2m"}}
	p, err = api.ParsePut([]byte(`[]`), q, limits)
	require.NoError(t, err)
	require.Equal(t, api.PutRequest{Body: []byte(`[]`), Tube: "emails", Priority: 4294967295, Delay: 2 * time.Second, TTR: 2 * time.Minute}, p,
		"delays are rounded up to whole seconds")

	p, err = api.ParsePut([]byte(`"x"`), url.Values{"delay": {"0"}, "ttr": {"1"}}, limits)
	require.NoError(t, err)
	require.Equal(t, api.PutRequest{Body: []byte(`"x"`), Tube: "default", TTR: time.Second}, p)
}

func TestParsePutBadInputs(t *testing.T) {
	t.Parallel()
	deep := strings.Repeat("[", 1001) + strings.Repeat("]", 1001)
	cases := []struct {
		name   string
		body   string
		query  string
		status int
		msg    string
	}{
		{"broken JSON", `{"a":}`, "", 400, "invalid JSON: syntax error at byte offset 6"},
		{"unterminated", `{"a":1`, "", 400, "syntax error at byte offset 6: unexpected end"},
		{"two documents", `{} {}`, "", 400, "syntax error at byte offset 4"},
		{"empty", ``, "", 400, "request body is empty"},
		{"blank", " \n\t", "", 400, "request body is empty"},
		{"over the limit", `"` + strings.Repeat("x", 99) + `"`, "", 413, "job body is 101 bytes; the limit is MAX_JOB_SIZE=100"},
		{"deep", deep, "", 400, "nests deeper than 1000"},
		{"invalid UTF-8", "{\"a\":\"\xff\"}", "", 400, "not valid UTF-8: bad byte at offset 6"},
		{"bad tube", `{}`, "tube=a%20b", 400, `tube "a b" is not a valid tube name`},
		{"empty tube", `{}`, "tube=", 400, "is not a valid tube name"},
		{"hyphen tube", `{}`, "tube=-x", 400, "is not a valid tube name"},
		{"long tube", `{}`, "tube=" + strings.Repeat("t", 201), 400, "is not a valid tube name"},
		{"two tubes", `{}`, "tube=a&tube=b", 400, "tube is given 2 times"},
		{"priority -1", `{}`, "priority=-1", 400, `priority "-1" is not a whole number from 0 to 4294967295`},
		{"priority 2^32", `{}`, "priority=4294967296", 400, "is not a whole number from 0 to 4294967295"},
		{"priority x", `{}`, "priority=x", 400, `priority "x" is not`},
		{"delay -1", `{}`, "delay=-1", 400, `delay "-1" is not a duration of at least 0s`},
		{"delay abc", `{}`, "delay=abc", 400, `delay "abc" is not a duration`},
		{"delay too long", `{}`, "delay=5000000000", 400, "delay"},
		{"ttr 0", `{}`, "ttr=0", 400, `ttr "0" is not a duration of at least 1s`},
		{"ttr 0.5", `{}`, "ttr=0.5", 400, "at least 1s"},
		{"ttr -1", `{}`, "ttr=-1", 400, `ttr "-1" is not`},
		{"ttr abc", `{}`, "ttr=abc", 400, `ttr "abc" is not`},
		{"ttr too long", `{}`, "ttr=4294967296", 400, "longer than beanstalkd's limit"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			q, err := url.ParseQuery(tc.query)
			require.NoError(t, err)
			_, err = api.ParsePut([]byte(tc.body), q, limits)
			var ae *api.Error
			require.True(t, errors.As(err, &ae), "want an *api.Error, got %v", err)
			require.Equal(t, tc.status, ae.Status, ae.Msg)
			require.Contains(t, ae.Msg, tc.msg)
		})
	}
}

func TestParseID(t *testing.T) {
	t.Parallel()
	for path, want := range map[string]uint64{"/1": 1, "/1/": 1, "/42/": 42, "/9223372036854775807": 1<<63 - 1} {
		id, err := api.ParseID(path)
		require.NoError(t, err, path)
		require.Equal(t, want, id, path)
	}
	for path, status := range map[string]int{
		"/0": 400, "/-1": 400, "/abc": 400, "/1.5": 400, "/99999999999999999999": 400,
		"/9223372036854775808": 400, "/+1": 400, "/ 1": 400,
		"/": 404, "/1/2": 404, "/a/b/": 404, "//": 404,
	} {
		_, err := api.ParseID(path)
		var ae *api.Error
		require.True(t, errors.As(err, &ae), path)
		require.Equal(t, status, ae.Status, path)
		if status == 400 {
			require.Contains(t, ae.Msg, "job id must be a positive integer", path)
		}
	}
}

// FuzzParsePut feeds arbitrary bodies and query strings to the request
// parser: it must never panic, and it must either accept the request with
// a body that is valid JSON within the limit, means what the request's
// body means, and is its own normal form, or refuse it with a 4xx.
func FuzzParsePut(f *testing.F) {
	f.Add([]byte(`{"example":"data"}`), "")
	f.Add([]byte(" [1, 2,\n 3] "), "tube=emails&priority=5&delay=1.5&ttr=2m")
	f.Add([]byte(`{}`), "ttr=0")
	f.Add([]byte("{\"a\":\"\xff\"}"), "priority=-1")
	f.Add([]byte(`[[[[[[[[[[`), "tube=%zz")
	f.Add([]byte(`"\u00e9\ud83d\ude00"`), "delay=1e400")
	f.Add([]byte(`{"b":1,"2":0,"a":[1.0,1e2,-0,1e21,1e400],"b":"\/\u001F\ud800","1":{}}`), "")
	lim := api.PutLimits{MaxJobSize: 256, DefaultTTR: time.Minute}
	f.Fuzz(func(t *testing.T, body []byte, rawQuery string) {
		q, err := url.ParseQuery(rawQuery)
		if err != nil {
			return // the handler answers 400 before ParsePut
		}
		p, err := api.ParsePut(body, q, lim)
		if err != nil {
			var ae *api.Error
			if !errors.As(err, &ae) {
				t.Fatalf("error is not an *api.Error: %v", err)
			}
			if ae.Status < 400 || ae.Status > 499 || ae.Msg == "" {
				t.Fatalf("status %d %q: want a 4xx with a message", ae.Status, ae.Msg)
			}
			if http.StatusText(ae.Status) == "" {
				t.Fatalf("status %d is not an HTTP status", ae.Status)
			}
			if ae.Status == http.StatusBadRequest && json.Valid(body) && strings.Contains(ae.Msg, "invalid JSON") {
				t.Fatalf("valid JSON %q refused: %s", body, ae.Msg)
			}
			return
		}
		if !json.Valid(body) {
			t.Fatalf("invalid JSON %q accepted as %q", body, p.Body)
		}
		checkNormal(t, body, p.Body, lim.MaxJobSize)
		if p.TTR < time.Second || p.Delay < 0 || p.TTR%time.Second != 0 || p.Delay%time.Second != 0 {
			t.Fatalf("ttr %s, delay %s: want whole seconds, ttr at least 1s", p.TTR, p.Delay)
		}
	})
}

// FuzzNormalizeJSON checks the normaliser alone: it accepts exactly the
// JSON encoding/json accepts (within the depth and size limits), and what
// it returns is valid JSON, within the limit, its own normal form, and
// decodes to what the body decodes to.
func FuzzNormalizeJSON(f *testing.F) {
	for _, s := range []string{`{"example":"data"}`, `[1.0,1e2,-0,1e21,1.5e-7,1e-7,0.000001,123456789012345678901]`,
		`{"b":1,"a":2,"b":3,"10":0,"9":1,"__proto__":null}`, `"\ud83d\ude00\ud800\u2028\/\u0000"`, ` true `, `{"a":}`} {
		f.Add([]byte(s))
	}
	const max = 4096
	f.Fuzz(func(t *testing.T, body []byte) {
		out, err := api.NormalizeJSON(body, max)
		if err != nil {
			var ae *api.Error
			if !errors.As(err, &ae) || ae.Status < 400 || ae.Status > 499 {
				t.Fatalf("error %v: want a 4xx *api.Error", err)
			}
			if ae.Status == http.StatusBadRequest && json.Valid(body) && strings.Contains(ae.Msg, "invalid JSON") {
				t.Fatalf("valid JSON %q refused: %s", body, ae.Msg)
			}
			return
		}
		if !json.Valid(body) {
			t.Fatalf("invalid JSON %q accepted as %q", body, out)
		}
		checkNormal(t, body, out, max)
	})
}

// checkNormal checks an accepted body's normal form out.
func checkNormal(t *testing.T, body, out []byte, max int) {
	t.Helper()
	if !json.Valid(out) || len(out) > max || len(out) == 0 {
		t.Fatalf("%q normalised to %q: not valid JSON within %d bytes", body, out, max)
	}
	again, err := api.NormalizeJSON(out, max)
	if err != nil || !bytes.Equal(again, out) {
		t.Fatalf("not idempotent: %q -> %q -> %q (%v)", body, out, again, err)
	}
	// Both decode to the same Go values (encoding/json, like JSON.parse,
	// keeps a duplicate key's last value); numbers beyond float64 do not
	// decode, and are checked against Node instead.
	var a, b any
	if json.Unmarshal(body, &a) == nil {
		if err := json.Unmarshal(out, &b); err != nil || !reflect.DeepEqual(a, b) {
			t.Fatalf("%q normalised to %q, which means something else (%v)", body, out, err)
		}
	}
}

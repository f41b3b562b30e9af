package api_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/services/manager/internal/api"
)

var limits = api.PutLimits{MaxJobSize: 100, DefaultTTR: time.Minute}

func TestParsePutDefaultsAndOptions(t *testing.T) {
	t.Parallel()
	p, err := api.ParsePut("", []byte(" {\n  \"example\" : \"da ta\" ,\n \"n\": [1, 2]\n}\n"), nil, limits)
	require.NoError(t, err)
	require.Equal(t, api.PutRequest{Body: []byte(`{"example":"da ta","n":[1,2]}`), Tube: "default", TTR: time.Minute}, p)

	q := url.Values{"tube": {"emails"}, "priority": {"4294967295"}, "delay": {"1.5"}, "ttr": {"2m"}}
	p, err = api.ParsePut("application/json; charset=UTF-8", []byte(`[]`), q, limits)
	require.NoError(t, err)
	require.Equal(t, api.PutRequest{Body: []byte(`[]`), Tube: "emails", Priority: 4294967295, Delay: 2 * time.Second, TTR: 2 * time.Minute}, p,
		"delays are rounded up to whole seconds")

	p, err = api.ParsePut("application/json", []byte(`"x"`), url.Values{"delay": {"0"}, "ttr": {"1"}}, limits)
	require.NoError(t, err)
	require.Equal(t, api.PutRequest{Body: []byte(`"x"`), Tube: "default", TTR: time.Second}, p)
}

func TestParsePutBadInputs(t *testing.T) {
	t.Parallel()
	deep := strings.Repeat("[", 1001) + strings.Repeat("]", 1001)
	cases := []struct {
		name   string
		ct     string
		body   string
		query  string
		status int
		msg    string
	}{
		{"broken JSON", "", `{"a":}`, "", 400, "invalid JSON: syntax error at byte offset 6"},
		{"unterminated", "", `{"a":1`, "", 400, "syntax error at byte offset 6: unexpected end"},
		{"two documents", "", `{} {}`, "", 400, "syntax error at byte offset 4"},
		{"empty", "", ``, "", 400, "request body is empty"},
		{"blank", "", " \n\t", "", 400, "request body is empty"},
		{"form", "application/x-www-form-urlencoded", `{}`, "", 415, "Content-Type"},
		{"text", "text/plain", `{}`, "", 415, "is not supported"},
		{"latin1", "application/json; charset=latin1", `{}`, "", 415, "is not supported"},
		{"garbage type", ";;;", `{}`, "", 415, "is not supported"},
		{"over the limit", "", `"` + strings.Repeat("x", 99) + `"`, "", 413, "job body is 101 bytes; the limit is MAX_JOB_SIZE=100"},
		{"deep", "", deep, "", 400, "nests deeper than 1000"},
		{"invalid UTF-8", "", "{\"a\":\"\xff\"}", "", 400, "not valid UTF-8: bad byte at offset 6"},
		{"bad tube", "", `{}`, "tube=a%20b", 400, `tube "a b" is not a valid tube name`},
		{"empty tube", "", `{}`, "tube=", 400, "is not a valid tube name"},
		{"hyphen tube", "", `{}`, "tube=-x", 400, "is not a valid tube name"},
		{"long tube", "", `{}`, "tube=" + strings.Repeat("t", 201), 400, "is not a valid tube name"},
		{"two tubes", "", `{}`, "tube=a&tube=b", 400, "tube is given 2 times"},
		{"priority -1", "", `{}`, "priority=-1", 400, `priority "-1" is not a whole number from 0 to 4294967295`},
		{"priority 2^32", "", `{}`, "priority=4294967296", 400, "is not a whole number from 0 to 4294967295"},
		{"priority x", "", `{}`, "priority=x", 400, `priority "x" is not`},
		{"delay -1", "", `{}`, "delay=-1", 400, `delay "-1" is not a duration of at least 0s`},
		{"delay abc", "", `{}`, "delay=abc", 400, `delay "abc" is not a duration`},
		{"delay too long", "", `{}`, "delay=5000000000", 400, "delay"},
		{"ttr 0", "", `{}`, "ttr=0", 400, `ttr "0" is not a duration of at least 1s`},
		{"ttr 0.5", "", `{}`, "ttr=0.5", 400, "at least 1s"},
		{"ttr -1", "", `{}`, "ttr=-1", 400, `ttr "-1" is not`},
		{"ttr abc", "", `{}`, "ttr=abc", 400, `ttr "abc" is not`},
		{"ttr too long", "", `{}`, "ttr=4294967296", 400, "longer than beanstalkd's limit"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			q, err := url.ParseQuery(tc.query)
			require.NoError(t, err)
			_, err = api.ParsePut(tc.ct, []byte(tc.body), q, limits)
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

// FuzzParsePut feeds arbitrary bodies, Content-Types and query strings to
// the request parser: it must never panic, and it must either accept the
// request with a compact, valid, small enough body, or refuse it with a
// 4xx.
func FuzzParsePut(f *testing.F) {
	f.Add("application/json", []byte(`{"example":"data"}`), "")
	f.Add("", []byte(" [1, 2,\n 3] "), "tube=emails&priority=5&delay=1.5&ttr=2m")
	f.Add("text/plain", []byte(`{}`), "ttr=0")
	f.Add("application/json; charset=utf-8", []byte("{\"a\":\"\xff\"}"), "priority=-1")
	f.Add("", []byte(`[[[[[[[[[[`), "tube=%zz")
	f.Add("", []byte(`"\u00e9\ud83d\ude00"`), "delay=1e400")
	lim := api.PutLimits{MaxJobSize: 256, DefaultTTR: time.Minute}
	f.Fuzz(func(t *testing.T, ct string, body []byte, rawQuery string) {
		q, err := url.ParseQuery(rawQuery)
		if err != nil {
			return // the handler answers 400 before ParsePut
		}
		p, err := api.ParsePut(ct, body, q, lim)
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
			return
		}
		if !json.Valid(p.Body) || len(p.Body) > lim.MaxJobSize || len(p.Body) == 0 {
			t.Fatalf("accepted body %q is not valid, compact JSON within the limit", p.Body)
		}
		if p.TTR < time.Second || p.Delay < 0 || p.TTR%time.Second != 0 || p.Delay%time.Second != 0 {
			t.Fatalf("ttr %s, delay %s: want whole seconds, ttr at least 1s", p.TTR, p.Delay)
		}
	})
}

package api_test

import (
	"bufio"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/queue"
	"github.com/jobsys/jobs/services/manager/internal/api"
)

// TestCurlContentTypes: curl --data and --data-binary without -H send
// application/x-www-form-urlencoded; the original system took the JSON
// body whatever its Content-Type, and so does this one.
func TestCurlContentTypes(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	cons := queue.NewConsumer(b.Beanstalk.Addr(), []string{b.Tube}, 0)
	defer cons.Close()
	for _, ct := range []string{"application/x-www-form-urlencoded", "text/plain", "", "application/json; charset=latin1",
		"multipart/form-data; boundary=x", ";;;"} {
		r := do(t, "POST", b.URL+"/?tube="+b.Tube, `{"name":"Jos\u00e9","n":1.0}`, "Content-Type", ct)
		require.Equal(t, http.StatusCreated, r.StatusCode, "Content-Type %q: %s", ct, r.Body)
		got, err := cons.Reserve(ctx(t), 5*time.Second)
		require.NoError(t, err)
		require.Equal(t, `{"name":"José","n":1}`, string(got.Body), "stored as JSON.stringify(JSON.parse(body))")
		require.NoError(t, cons.Delete(ctx(t), got.ID))
	}
	// PATCH takes its body whatever the type too.
	requireError(t, do(t, "PATCH", b.URL+"/987654321/", `{"state":"ready"}`, "Content-Type", "text/plain"),
		http.StatusNotFound, "job 987654321 not found")
}

// TestCrossOrigin: writes a browser sends for another site are refused;
// curl, same-origin pages and the configured origins pass; reads are
// never refused.
func TestCrossOrigin(t *testing.T) {
	t.Parallel()
	b := setup(t, options{cfg: api.Config{CORSOrigins: []string{"https://board.example"}}})
	host := strings.TrimPrefix(b.URL, "http://")
	cases := []struct {
		name    string
		headers []string
		refused bool
	}{
		{"curl: neither header", nil, false},
		{"cross-site", []string{"Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example"}, true},
		{"cross-site without Origin", []string{"Sec-Fetch-Site", "cross-site"}, true},
		{"same-site is another origin", []string{"Sec-Fetch-Site", "same-site", "Origin", "http://other." + host}, true},
		{"same-origin", []string{"Sec-Fetch-Site", "same-origin", "Origin", b.URL}, false},
		{"none: typed by the user", []string{"Sec-Fetch-Site", "none"}, false},
		{"old browser, Origin is the host", []string{"Origin", b.URL}, false},
		{"old browser, another Origin", []string{"Origin", "https://evil.example"}, true},
		{"old browser, null Origin", []string{"Origin", "null"}, true},
		{"trusted origin, cross-site", []string{"Sec-Fetch-Site", "cross-site", "Origin", "https://board.example"}, false},
		{"trusted origin, old browser", []string{"Origin", "https://board.example"}, false},
	}
	for _, tc := range cases {
		for _, m := range []struct{ method, path, body string }{
			{"POST", "/?tube=" + b.Tube, `{}`},
			{"PATCH", "/987654321/", `{"state":"ready"}`},
			{"DELETE", "/987654321/", ""},
			{"PUT", "/987654321/", ""},
		} {
			r := do(t, m.method, b.URL+m.path, m.body, tc.headers...)
			if tc.refused {
				requireError(t, r, http.StatusForbidden, "cross-origin request refused")
				require.Contains(t, string(r.Body), "MANAGER_CORS_ORIGINS", "%s %s", tc.name, m.method)
				continue
			}
			require.NotEqual(t, http.StatusForbidden, r.StatusCode, "%s %s: %s", tc.name, m.method, r.Body)
			want := map[string]int{"POST": 201, "PATCH": 404, "DELETE": 404, "PUT": 405}[m.method]
			require.Equal(t, want, r.StatusCode, "%s %s: %s", tc.name, m.method, r.Body)
		}
		// Reads are never refused.
		for _, method := range []string{"GET", "HEAD", "OPTIONS"} {
			r := do(t, method, b.URL+"/987654321/", "", tc.headers...)
			require.NotEqual(t, http.StatusForbidden, r.StatusCode, "%s %s", tc.name, method)
		}
	}

	// "*" opens writes to every site, as it opens CORS.
	open := setup(t, options{cfg: api.Config{CORSOrigins: []string{"*"}}})
	r := do(t, "POST", open.URL+"/?tube="+open.Tube, `{}`, "Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example")
	require.Equal(t, http.StatusCreated, r.StatusCode, "%s", r.Body)
	// Without origins configured a cross-site write is refused too.
	none := setup(t, options{})
	requireError(t, do(t, "POST", none.URL+"/", `{}`, "Sec-Fetch-Site", "cross-site"), http.StatusForbidden, "cross-origin")
}

// TestHead: HEAD is served wherever GET is, with GET's status and no
// body, and 405s list it.
func TestHead(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	for path, status := range map[string]int{"/healthz": 200, "/readyz": 200, "/metrics": 200, "/987654321/": 404, "/abc": 400, "/a/b": 404} {
		get := do(t, "GET", b.URL+path, "")
		head := do(t, "HEAD", b.URL+path, "")
		require.Equal(t, status, get.StatusCode, path)
		require.Equal(t, status, head.StatusCode, path)
		require.Empty(t, head.Body, path)
		require.Equal(t, get.Header.Get("Content-Type"), head.Header.Get("Content-Type"), path)
	}
	c := post(t, b, "tube="+b.Tube, `{}`)
	require.Equal(t, http.StatusOK, do(t, "HEAD", b.URL+"/"+strconv.FormatUint(c.ID, 10)+"/", "").StatusCode)
}

// TestMetricLabelsStayFew: invented methods and paths, past a thousand
// each, add a fixed handful of series, with or without a token.
func TestMetricLabelsStayFew(t *testing.T) {
	t.Parallel()
	for _, cfg := range []api.Config{{}, {Token: "s3cret"}} {
		b := setup(t, options{cfg: cfg})
		series := func() int {
			r := do(t, "GET", b.URL+"/metrics", "")
			require.Equal(t, http.StatusOK, r.StatusCode)
			n := 0
			sc := bufio.NewScanner(strings.NewReader(string(r.Body)))
			for sc.Scan() {
				if strings.HasPrefix(sc.Text(), "manager_http_request") {
					n++
				}
			}
			return n
		}
		client := &http.Client{Timeout: 10 * time.Second}
		send := func(method, path string) {
			req, err := http.NewRequest(method, b.URL+path, nil)
			require.NoError(t, err)
			resp, err := client.Do(req)
			require.NoError(t, err)
			resp.Body.Close()
		}
		round := func(i int) {
			send("INVENTED"+strconv.Itoa(i), "/"+strconv.Itoa(i)+"/")
			send("GET", "/unknown/"+strconv.Itoa(i))
			send("X"+strconv.Itoa(i), "/unknown/"+strconv.Itoa(i))
		}
		for i := range 20 {
			round(i)
		}
		series() // /metrics' own series exist from the second scrape on
		before := series()
		for i := 20; i < 1020; i++ {
			round(i)
		}
		after := series()
		require.Equal(t, before, after, "token %q: 3,000 more invented methods and paths, no more series", cfg.Token)
		require.Less(t, after, 150, "every label from a fixed set")
		r := do(t, "GET", b.URL+"/metrics", "")
		require.Contains(t, string(r.Body), `method="OTHER"`)
		require.NotContains(t, string(r.Body), "INVENTED")
		require.NotContains(t, string(r.Body), "/unknown/")
	}
}

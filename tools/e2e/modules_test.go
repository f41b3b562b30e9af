package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/testenv"
)

// moduleBrowser serves web/static (and an empty page that loads nothing)
// and opens the empty page in headless Chromium, so that a test can
// import one of the board's modules and run its logic where it runs for
// real: no services, no notifier.
func moduleBrowser(t *testing.T) *browser {
	t.Helper()
	chrome := chromiumPath(t)
	root, err := testenv.RepoRoot()
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle("/", http.FileServer(http.Dir(filepath.Join(root, "web", "static"))))
	mux.HandleFunc("/blank.html", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, `<!doctype html><title>modules</title><body></body>`)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	br := startBrowser(t, chrome)
	br.do(t, "open the empty page", chromedp.Navigate(srv.URL+"/blank.html"))
	return br
}

// run evaluates an async JavaScript function body in the page and
// decodes what it returns into out.
func (b *browser) run(t *testing.T, body string, out any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte]("(async () => {"+body+"})()", chromedp.EvalAwaitPromise))
	require.NoError(t, err, "run %s", body)
	require.NoError(t, json.Unmarshal(raw, out), "decode %s", raw)
}

// TestThroughputCountsByCompletedAt feeds the sparkline's counter the way
// the notifier delivers completions: in polls, and a backlog at once
// after a reconnect. Counting arrivals, as the board did, swung a steady
// 2 jobs/s between 0 and 3 and drew the backlog as one impossible peak.
func TestThroughputCountsByCompletedAt(t *testing.T) {
	t.Parallel()
	br := moduleBrowser(t)

	var got struct {
		Steady   []int   `json:"steady"`
		Current  float64 `json:"current"`
		Backlog  int     `json:"backlog"`
		Peak     int     `json:"peak"`
		TruePeak int     `json:"truePeak"`
		Total    int     `json:"total"`
		Frozen   int     `json:"frozen"`
		Before   int     `json:"before"`
		Buckets  int     `json:"buckets"`
	}
	br.run(t, `
const { Throughput } = await import('/throughput.js');
const t0 = 1_700_000_000_000;
const out = {};

// 2 jobs/s for a minute, delivered in polls of uneven size and timing.
let tp = new Throughput({ settleMs: 1500 });
tp.coverFrom(t0);
const done = [];
for (let ms = t0 + 250; ms < t0 + 60_000; ms += 500) done.push(ms);
for (let i = 0; i < done.length;) {
  const n = 1 + (i * 7) % 5; // polls of 1 to 5 completions
  const arrival = done[Math.min(i + n, done.length) - 1] + 300;
  for (const ms of done.slice(i, i + n)) tp.add(ms, arrival);
  i += n;
}
let s = tp.summary(t0 + 61_500);
out.steady = s.pts.map((p) => p.v);
out.current = s.current;

// 4 workers, 2.5 s a job, for a minute; the board was offline and gets
// the whole backlog at once when it reconnects.
tp = new Throughput({ settleMs: 1500 });
tp.coverFrom(t0);
tp.freeze(t0 + 1000);
const backlog = [];
for (let w = 0; w < 4; w++) for (let ms = t0 + 100 + w * 600; ms < t0 + 60_000; ms += 2500) backlog.push(ms);
tp.freeze(0);
for (const ms of backlog) tp.add(ms, t0 + 61_000);
s = tp.summary(t0 + 61_500);
out.backlog = backlog.length;
out.peak = s.peak;
out.total = s.total;
const perSecond = new Map();
for (const ms of backlog) perSecond.set(Math.floor(ms / 1000), (perSecond.get(Math.floor(ms / 1000)) ?? 0) + 1);
out.truePeak = Math.max(...perSecond.values());

// While disconnected the series stops at the drop.
tp = new Throughput({ settleMs: 1500 });
tp.coverFrom(t0);
tp.freeze(t0 + 10_000);
out.frozen = tp.series(t0 + 30_000).pts.length;

// Before the board holds every completion it draws nothing.
tp = new Throughput({ settleMs: 1500 });
tp.coverFrom(t0 + 30_000);
for (let ms = t0; ms < t0 + 30_000; ms += 100) tp.add(ms, t0 + 40_000);
out.before = tp.summary(t0 + 40_000).total;

// Stamps from clocks gone wrong (a day behind or ahead) take no room.
tp = new Throughput({ settleMs: 1500 });
tp.coverFrom(t0);
for (let i = 0; i < 100_000; i++) tp.add(t0 + (i % 2 ? 1 : -1) * i * 1000, t0);
out.buckets = tp.buckets.size;
return JSON.stringify(out);`, new(jsonString).into(&got))

	require.Len(t, got.Steady, 60, "a minute of settled seconds")
	for i, v := range got.Steady {
		require.Equal(t, 2, v, "second %d of a steady 2 jobs/s", i)
	}
	require.InDelta(t, 2.0, got.Current, 1e-9, "the rate now reads 2/s")
	require.Equal(t, got.Backlog, got.Total, "every completion of the backlog counted once")
	require.Equal(t, got.TruePeak, got.Peak, "the backlog's peak is the busiest second of the work, not of the arrival")
	require.LessOrEqual(t, got.Peak, 2, "4 workers at 2.5 s a job never finish 3 in a second")
	require.Equal(t, 10, got.Frozen, "the series ends where the connection dropped")
	require.Zero(t, got.Before, "completions before the board's data starts are not drawn")
	require.LessOrEqual(t, got.Buckets, 5*60+2+60, "buckets for the window and a minute ahead at most")
	require.Positive(t, got.Buckets)
}

// jsonString decodes a JSON string holding JSON into a value.
type jsonString struct{ v any }

func (j *jsonString) into(v any) *jsonString { j.v = v; return j }

func (j *jsonString) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	return json.Unmarshal([]byte(s), j.v)
}

// TestPayloadSizeMatchesTheManager checks the editor's size against what
// a real manager stores (JSON.stringify(JSON.parse(body)), held to
// MAX_JOB_SIZE), read back from the stored results; then that the editor
// warns before the submit exactly when the manager refuses.
func TestPayloadSizeMatchesTheManager(t *testing.T) {
	t.Parallel()
	const limit = 200
	b := testenv.Setup(t)
	b.Beanstalk = testenv.StartBeanstalkd(t, testenv.BeanstalkdOptions{})
	st := testenv.StartStack(t, b, testenv.StackOptions{NoNotifier: true,
		WorkerEnv:  map[string]string{"WORKER_TUBES": "default", "WORK_DELAY": "0s"},
		ManagerEnv: map[string]string{"MAX_JOB_SIZE": strconv.Itoa(limit)}})
	api := managerClient{t: t, base: st.ManagerURL}
	br := moduleBrowser(t)

	// Spelled as other languages spell JSON: the manager stores them as
	// JavaScript would.
	payloads := []string{
		`{"example":"data","padding":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}`,
		"{ \"a\" : [ 1.0 , 2.50 , 1e21, -0 ] ,\n\t\"b\" : null, \"c\": \"  kept   \" }\n",
		`{"\u00e9":"\u00e9 ü ß","emoji":"😀 👩‍👩‍👧","cjk":"漢字漢字"}`,
		`["\"quoted\" and \\ backslash", "\/", "\ud83d\ude00", "\u0041\u0042"]`,
		`{"2":"two","1":"one","b":1,"a":2,"b":3,"z":"zzzzzzzzzzzzzzz"}`,
		`[1e400, 0.1, 100000000000000000000000, 5e-7, 123456789012345678]`,
	}
	var want []int
	for _, p := range payloads {
		id := api.put(p)
		api.waitResult(id, 30*time.Second)
		want = append(want, len(api.result(id).Payload))
	}
	in, err := json.Marshal(payloads)
	require.NoError(t, err)
	var got []int
	br.run(t, fmt.Sprintf(`
const { storedSize } = await import('/editor.js');
return JSON.stringify(%s.map((p) => storedSize(JSON.parse(p))));`, in), new(jsonString).into(&got))
	require.Equal(t, want, got, "the editor's size is the manager's")

	var states struct {
		AtLimit, OverLimit, Spaced, TooLong string
		OverText                            string
	}
	br.run(t, fmt.Sprintf(`
const { PayloadEditor } = await import('/editor.js');
document.body.innerHTML = '<textarea id="p"></textarea><div id="s"><span class="payload-status-text"></span></div><button id="g"></button><button id="f"></button>';
const ta = document.getElementById('p');
const ed = new PayloadEditor({ textarea: ta, status: document.getElementById('s'), gotoButton: document.getElementById('g'), formatButton: document.getElementById('f'), maxSize: %[1]d, maxSizeNote: ' (MAX_JOB_SIZE)' });
const set = (v) => { ta.value = v; ta.dispatchEvent(new Event('input')); return document.getElementById('s').dataset.valid; };
const str = (n) => JSON.stringify('x'.repeat(n - 2)); // a JSON string of n bytes
const out = {};
out.AtLimit = set(str(%[1]d));
out.OverLimit = set(str(%[1]d + 1));
out.OverText = document.querySelector('.payload-status-text').textContent;
out.Spaced = set(' '.repeat(%[1]d + 1) + str(%[1]d / 2) + ' '.repeat(%[1]d - %[1]d / 2));  // 2 × limit + 1 bytes sent
out.TooLong = set(' '.repeat(%[1]d + 2) + str(%[1]d / 2) + ' '.repeat(%[1]d - %[1]d / 2)); // one more
return JSON.stringify(out);`, limit), new(jsonString).into(&states))
	require.Equal(t, "true", states.AtLimit, "exactly MAX_JOB_SIZE bytes is accepted")
	require.Equal(t, "too-large", states.OverLimit, "one byte over is flagged before the submit")
	require.Contains(t, states.OverText, "201 bytes")
	require.Contains(t, states.OverText, "limit of 200 bytes (MAX_JOB_SIZE)")
	require.Equal(t, "true", states.Spaced, "whitespace the manager removes does not count")
	require.Equal(t, "too-large", states.TooLong, "the manager reads at most twice the limit as sent")

	t.Log("and the manager agrees at the edges")
	for _, c := range []struct {
		body string
		want int
	}{
		{`"` + strings.Repeat("x", limit-2) + `"`, http.StatusCreated},
		{`"` + strings.Repeat("x", limit-1) + `"`, http.StatusRequestEntityTooLarge},
		{strings.Repeat(" ", limit+1) + `"` + strings.Repeat("x", limit/2-2) + `"` + strings.Repeat(" ", limit-limit/2), http.StatusCreated},
		{strings.Repeat(" ", limit+2) + `"` + strings.Repeat("x", limit/2-2) + `"` + strings.Repeat(" ", limit-limit/2), http.StatusRequestEntityTooLarge},
	} {
		res, err := http.Post(st.ManagerURL+"/", "application/json", strings.NewReader(c.body))
		require.NoError(t, err)
		res.Body.Close()
		require.Equal(t, c.want, res.StatusCode, "POST %d bytes", len(c.body))
	}
}

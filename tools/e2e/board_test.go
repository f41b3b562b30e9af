// Package e2e drives the whole system through the job board: the real
// manager, worker and notifier binaries against a real beanstalkd and the
// FerretDB-based devmongo, and the board in headless Chromium.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/testenv"
)

var updateDocs = flag.Bool("update-docs", false, "also write docs/board.png, the README's screenshot")

func TestMain(m *testing.M) { testenv.Main(m) }

// workDelay is the worker's simulated work time: long enough for the
// notifier's tracker (one round a second) to see a job reserved.
const workDelay = "2500ms"

func TestBoard(t *testing.T) {
	t.Parallel()
	chrome := chromiumPath(t)

	st := startBoardStack(t, workDelay, "mongo-express=http://127.0.0.1:8081,beanstalkd console=http://127.0.0.1:2080")
	api := managerClient{t: t, base: st.ManagerURL}
	br := startBrowser(t, chrome)

	t.Log("load the board")
	br.do(t, "open the board", chromedp.EmulateViewport(1280, 900), chromedp.Navigate(st.NotifierURL+"/"))
	br.wait(t, "the connection opens", `document.querySelector('[data-testid=connection]').dataset.state === 'open'`, 20*time.Second)
	require.Equal(t, 2, br.eval(t, `document.querySelectorAll('#links a').length`).Int(), "links from BOARD_LINKS")
	br.do(t, "install the recorder", chromedp.Evaluate[chromedp.Void](recorderJS))

	t.Log("the editor refuses invalid JSON")
	br.typePayload(t, `{"broken": }`)
	require.True(t, br.eval(t, `document.querySelector('[data-testid=submit]').disabled`).Bool(), "submit is disabled while the payload is invalid")
	require.Contains(t, br.eval(t, `document.getElementById('payload-status').textContent`).String(), "Line 1, column 12")

	t.Log("submit a job and follow it to completed")
	// n stays below 2^53: the manager stores JSON.stringify(JSON.parse(body)),
	// which would round a larger number, and so its hash.
	payload := fmt.Sprintf(`{"e2e":"board","n":%d}`, time.Now().UnixMilli())
	br.typePayload(t, payload)
	require.False(t, br.eval(t, `document.querySelector('[data-testid=submit]').disabled`).Bool(), "submit is enabled for valid JSON")
	br.do(t, "set the priority", chromedp.SetValue(chromedp.CSS(`[data-testid=priority]`), "10"))
	br.do(t, "submit", chromedp.Click(chromedp.CSS(`[data-testid=submit]`)))
	br.wait(t, "the job appears in My jobs", `document.querySelector('[data-testid=my-jobs] [data-testid=job-row]')`, 15*time.Second)
	first := br.eval(t, `Number(document.querySelector('[data-testid=my-jobs] [data-testid=job-row]').dataset.jobId)`).Int()
	require.Positive(t, first)
	mine := fmt.Sprintf(`[data-testid=my-jobs] [data-testid=job-row][data-job-id="%d"]`, first)
	br.wait(t, "the job completes", fmt.Sprintf(`document.querySelector('%s')?.dataset.state === 'completed'`, mine), 30*time.Second)
	require.Equal(t, job.Hash(payload), br.eval(t, fmt.Sprintf(`document.querySelector('%s [data-testid=hash]').textContent`, mine)).String(),
		"the board shows the hash of what was typed")
	// A worker is waiting, so the job may be ready for less than a frame:
	// the row must show reserved on its way, in order, and end completed.
	require.Subset(t, []string{"ready", "reserved", "completed"}, br.states(t, first))
	require.Equal(t, []string{"reserved", "completed"}, without(br.states(t, first), "ready"), "the row went through reserved to completed")
	require.GreaterOrEqual(t, br.maxCount(t, "reserved"), 1, "count-reserved showed the running job")
	require.GreaterOrEqual(t, br.count(t, "completed"), 1, "count-completed counted it")
	require.Equal(t, job.Hash(payload), api.result(first).Hash, "the manager agrees")

	t.Log("a delayed job shows as delayed first")
	delayed := `{"e2e":"delayed"}`
	br.typePayload(t, delayed)
	br.do(t, "set the delay", chromedp.SetValue(chromedp.CSS(`[data-testid=priority]`), "0"), chromedp.SetValue(chromedp.CSS(`[data-testid=delay]`), "2"))
	br.do(t, "submit", chromedp.Click(chromedp.CSS(`[data-testid=submit]`)))
	br.wait(t, "a second job in My jobs", `document.querySelectorAll('[data-testid=my-jobs] [data-testid=job-row]').length === 2`, 15*time.Second)
	second := br.eval(t, `Number(document.querySelector('[data-testid=my-jobs] [data-testid=job-row]').dataset.jobId)`).Int()
	require.NotEqual(t, first, second)
	br.wait(t, "the delayed job completes", fmt.Sprintf(`document.querySelector('[data-testid=my-jobs] [data-testid=job-row][data-job-id="%d"]')?.dataset.state === 'completed'`, second), 40*time.Second)
	seen := br.states(t, second)
	require.Equal(t, "delayed", seen[0], "the delayed job started as delayed")
	require.Equal(t, "completed", seen[len(seen)-1])
	require.GreaterOrEqual(t, br.maxCount(t, "delayed"), 1, "count-delayed showed it")
	br.do(t, "reset the delay", chromedp.SetValue(chromedp.CSS(`[data-testid=delay]`), "0"))

	t.Log("look the first job up by id")
	br.do(t, "look up", chromedp.SetValue(chromedp.CSS(`[data-testid=lookup-id]`), strconv.Itoa(first)),
		chromedp.Click(chromedp.CSS(`[data-testid=lookup-submit]`)))
	br.wait(t, "the detail shows the hash", fmt.Sprintf(`document.querySelector('[data-testid=detail] [data-testid=hash]')?.textContent === %q`, job.Hash(payload)), 15*time.Second)
	require.Contains(t, br.eval(t, `document.querySelector('[data-testid=detail] pre').textContent`).String(), `"e2e": "board"`, "the payload is pretty-printed")

	t.Log("restart the notifier; completions meanwhile are replayed")
	before := br.count(t, "completed")
	br.expectWSErrors.Store(true)
	st.Notifier.Stop()
	br.wait(t, "the board sees the notifier go", `document.querySelector('[data-testid=connection]').dataset.state !== 'open'`, 20*time.Second)
	var missed []int
	for i := range 3 {
		missed = append(missed, api.put(fmt.Sprintf(`{"e2e":"while the notifier is down","i":%d}`, i)))
	}
	for _, id := range missed {
		api.waitResult(id, 30*time.Second)
	}
	require.NoError(t, st.Notifier.Restart(), "restart the notifier")
	br.wait(t, "the board reconnects", `document.querySelector('[data-testid=connection]').dataset.state === 'open'`, 60*time.Second)
	for _, id := range missed {
		br.wait(t, fmt.Sprintf("job %d replayed into the feed", id),
			fmt.Sprintf(`document.querySelector('[data-testid=feed] [data-testid=job-row][data-job-id="%d"]')`, id), 20*time.Second)
	}
	// Give a late duplicate the chance to show before counting.
	br.do(t, "settle", chromedp.Sleep(1500*time.Millisecond))
	br.expectWSErrors.Store(false)
	require.Equal(t, before+len(missed), br.count(t, "completed"), "each missed completion counted once")
	require.Zero(t, br.eval(t, duplicateRowsJS).Int(), "no job twice in the feed")

	t.Log("a burst for the screenshots")
	var burst []int
	for i := range 24 {
		burst = append(burst, api.put(fmt.Sprintf(`{"e2e":"burst","i":%d}`, i)))
	}
	br.wait(t, "the burst is running", `Number(document.querySelector('[data-testid=count-reserved]').textContent) > 0`, 15*time.Second)
	br.do(t, "let the sparkline rise", chromedp.Sleep(3*time.Second))
	br.screenshots(t, "board")
	br.wait(t, "the burst completes", fmt.Sprintf(`Number(document.querySelector('[data-testid=count-completed]').textContent) >= %d`, before+len(missed)+len(burst)), 60*time.Second)
	br.do(t, "settle", chromedp.Sleep(time.Second))
	require.Equal(t, before+len(missed)+len(burst), br.count(t, "completed"), "the burst counted once each")
	require.Zero(t, br.eval(t, duplicateRowsJS).Int(), "no job twice in the feed")

	br.mu.Lock()
	defer br.mu.Unlock()
	for _, e := range br.tolerated {
		t.Logf("console while the notifier was down (expected): %s", e)
	}
	require.Empty(t, br.errors, "errors in the browser console")
}

// startBoardStack starts the services for a board test: eight workers on
// the tube "default" that take delay a job, and the notifier with links.
func startBoardStack(t *testing.T, delay, links string) *testenv.Stack {
	t.Helper()
	b := testenv.Setup(t)
	// A beanstalkd of the test's own, so the tube "default" and its counts
	// belong to this test alone.
	b.Beanstalk = testenv.StartBeanstalkd(t, testenv.BeanstalkdOptions{})
	return testenv.StartStack(t, b, testenv.StackOptions{
		WorkerEnv: map[string]string{
			"WORKER_TUBES":       "default",
			"WORKER_CONCURRENCY": "8",
			"WORK_DELAY":         delay,
		},
		NotifierEnv: map[string]string{"BOARD_LINKS": links},
	})
}

// TestBoardAsksForToken runs the services with API_TOKEN: the board asks
// for the token when the notifier refuses its WebSocket, asks again when
// the token is wrong, then connects and submits with it.
func TestBoardAsksForToken(t *testing.T) {
	t.Parallel()
	chrome := chromiumPath(t)

	b := testenv.Setup(t)
	b.Beanstalk = testenv.StartBeanstalkd(t, testenv.BeanstalkdOptions{})
	const token = "e2e-token"
	// No worker: the submitted job stays ready, for count-ready.
	st := testenv.StartStack(t, b, testenv.StackOptions{Workers: -1, Env: map[string]string{"API_TOKEN": token}})
	br := startBrowser(t, chrome)

	// Until it has the right token the board's /ws attempts are refused,
	// and the browser says so in the console.
	br.expectWSErrors.Store(true)
	t.Log("load the board: the notifier refuses it without the token")
	br.do(t, "open the board", chromedp.EmulateViewport(1280, 900), chromedp.Navigate(st.NotifierURL+"/"))
	br.wait(t, "the token dialog opens", `document.getElementById('token-dialog').open`, 20*time.Second)
	require.Equal(t, "closed", br.eval(t, `document.querySelector('[data-testid=connection]').dataset.state`).String())

	t.Log("a wrong token is refused and asked for again")
	br.do(t, "give a wrong token", chromedp.SendKeys(chromedp.CSS(`#token-input`), "wrong\r"))
	br.wait(t, "the dialog asks again", `document.getElementById('token-dialog').open && document.getElementById('token-error').textContent.includes('rejected')`, 20*time.Second)

	t.Log("the right token connects")
	br.do(t, "give the token", chromedp.SendKeys(chromedp.CSS(`#token-input`), token+"\r"))
	br.wait(t, "the connection opens", `document.querySelector('[data-testid=connection]').dataset.state === 'open'`, 20*time.Second)
	require.Equal(t, token, br.eval(t, `sessionStorage.getItem('jobboard.token')`).String(), "the token is kept in sessionStorage")
	br.do(t, "settle", chromedp.Sleep(500*time.Millisecond))
	br.expectWSErrors.Store(false)

	t.Log("submit with the token")
	payload := `{"e2e":"with a token"}`
	br.typePayload(t, payload)
	br.do(t, "submit", chromedp.Click(chromedp.CSS(`[data-testid=submit]`)))
	br.wait(t, "the job is accepted and ready", `document.querySelector('[data-testid=my-jobs] [data-testid=job-row]')?.dataset.state === 'ready'`, 15*time.Second)
	br.wait(t, "count-ready shows it", `document.querySelector('[data-testid=count-ready]').textContent === '1'`, 15*time.Second)
	require.False(t, br.eval(t, `document.getElementById('token-dialog').open`).Bool(), "no second prompt for the API")

	br.mu.Lock()
	defer br.mu.Unlock()
	require.NotEmpty(t, br.tolerated, "the refused /ws attempts were reported")
	require.Empty(t, br.errors, "errors in the browser console")
}

// without returns s without the elements equal to drop.
func without(s []string, drop string) []string {
	var out []string
	for _, x := range s {
		if x != drop {
			out = append(out, x)
		}
	}
	return out
}

// recorderJS keeps, for each row of My jobs, the states it went through,
// and the highest value each counter showed.
const recorderJS = `(() => {
  const rec = window.__e2e = { states: {}, max: {} };
  const look = () => {
    for (const r of document.querySelectorAll('[data-testid=my-jobs] [data-testid=job-row]')) {
      const seen = (rec.states[r.dataset.jobId] ??= []);
      if (seen.at(-1) !== r.dataset.state) seen.push(r.dataset.state);
    }
    for (const k of ['ready', 'delayed', 'reserved', 'buried', 'completed']) {
      // "–" until the first stats frame.
      const v = Number(document.querySelector('[data-testid=count-' + k + ']').textContent) || 0;
      rec.max[k] = Math.max(rec.max[k] ?? 0, v);
    }
  };
  new MutationObserver(look).observe(document.body, { subtree: true, childList: true, attributes: true, characterData: true });
  look();
})()`

// duplicateRowsJS counts the job ids that appear on more than one feed row.
const duplicateRowsJS = `(() => {
  const ids = [...document.querySelectorAll('[data-testid=feed] [data-testid=job-row]')].map((r) => r.dataset.jobId);
  return ids.length - new Set(ids).size;
})()`

// chromiumPath finds Chromium or Chrome, or skips the test.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	t.Skip("e2e: no Chromium on PATH (apt-get install chromium); the board's browser test needs it and CI installs it")
	return ""
}

// browser is one headless Chromium tab and what its console said.
type browser struct {
	ctx context.Context
	// expectWSErrors is set while the notifier is down or refuses the
	// board's token: the browser then reports the failed WebSocket
	// attempts (and the board's probe of /ws) as errors, which are expected.
	expectWSErrors atomic.Bool
	// expectNetErrors is set while a request is meant to fail (the
	// notifier down, a payload refused): the browser logs each.
	expectNetErrors atomic.Bool
	mu              sync.Mutex
	errors          []string
	tolerated       []string
}

func startBrowser(t *testing.T, path string) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.WindowSize(1280, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	br := &browser{}
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithListener(br.listen))
	t.Cleanup(cancel)
	require.NoError(t, chromedp.Do(ctx), "start Chromium")
	br.ctx = ctx
	return br
}

// listen runs in the tab's event loop: it only records.
func (b *browser) listen(ev any) {
	var msg string
	tolerable := false
	switch e := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		if e.Type != runtime.ConsoleAPICalledTypeError {
			return
		}
		var parts []string
		for _, a := range e.Args {
			if len(a.Value) > 0 {
				parts = append(parts, string(a.Value))
			} else {
				parts = append(parts, a.Description)
			}
		}
		msg = "console.error: " + strings.Join(parts, " ")
	case *runtime.EventExceptionThrown:
		d := e.ExceptionDetails
		msg = "exception: " + d.Text
		if d.Exception != nil {
			msg += " " + d.Exception.Description
		}
		msg += fmt.Sprintf(" at %s:%d", d.URL, d.LineNumber+1)
	case *cdplog.EventEntryAdded:
		en := e.Entry
		if en.Level != cdplog.EntryLevelError {
			return
		}
		msg = fmt.Sprintf("log %s: %s (%s)", en.Source, en.Text, en.URL)
		// While the notifier is down the browser reports each failed
		// connection to /ws (and the board's probe of it).
		network := en.Source == cdplog.EntrySourceNetwork
		// So does the board's health check of the manager, through it.
		tolerable = network && (b.expectNetErrors.Load() || strings.Contains(en.Text+" "+en.URL, "/ws") || strings.Contains(en.URL, "/api/readyz"))
	default:
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if tolerable && (b.expectWSErrors.Load() || b.expectNetErrors.Load()) {
		b.tolerated = append(b.tolerated, msg)
		return
	}
	b.errors = append(b.errors, msg)
}

func (b *browser) do(t *testing.T, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v\nboard: %s", what, err, b.snapshot())
	}
}

// value is a JavaScript result.
type value struct{ raw json.RawMessage }

func (v value) Int() int {
	var n float64
	_ = json.Unmarshal(v.raw, &n)
	return int(n)
}

func (v value) Bool() bool {
	var x bool
	_ = json.Unmarshal(v.raw, &x)
	return x
}

func (v value) String() string {
	var s string
	if json.Unmarshal(v.raw, &s) != nil {
		return string(v.raw)
	}
	return s
}

func (b *browser) eval(t *testing.T, expr string) value {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return value{raw: raw}
}

// wait polls expr in the page until it is truthy.
func (b *browser) wait(t *testing.T, what, expr string, within time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, within+10*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr,
		chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(within)))
	if err != nil {
		t.Fatalf("%s (within %s): %v\nboard: %s", what, within, err, b.snapshot())
	}
}

// snapshot describes the board for a failure message.
func (b *browser) snapshot() string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](`JSON.stringify({
	  connection: document.querySelector('[data-testid=connection]')?.textContent.trim(),
	  counts: Object.fromEntries(['ready','delayed','reserved','buried','completed'].map((k) => [k, document.querySelector('[data-testid=count-' + k + ']')?.textContent])),
	  mine: [...document.querySelectorAll('[data-testid=my-jobs] [data-testid=job-row]')].map((r) => r.dataset.jobId + ':' + r.dataset.state),
	  feed: [...document.querySelectorAll('[data-testid=feed] [data-testid=job-row]')].slice(0, 20).map((r) => r.dataset.jobId),
	  recorded: window.__e2e,
	})`))
	if err != nil {
		return fmt.Sprintf("(no snapshot: %v)", err)
	}
	var s string
	_ = json.Unmarshal(raw, &s)
	b.mu.Lock()
	defer b.mu.Unlock()
	return fmt.Sprintf("%s\nconsole errors: %q", s, b.errors)
}

// typePayload replaces the editor's text by typing.
func (b *browser) typePayload(t *testing.T, text string) {
	t.Helper()
	b.do(t, "type the payload",
		chromedp.Evaluate[chromedp.Void](`document.querySelector('[data-testid=payload]').select()`),
		chromedp.SendKeys(chromedp.CSS(`[data-testid=payload]`), text))
	require.Equal(t, text, b.eval(t, `document.querySelector('[data-testid=payload]').value`).String())
}

func (b *browser) count(t *testing.T, name string) int {
	t.Helper()
	s := b.eval(t, fmt.Sprintf(`document.querySelector('[data-testid=count-%s]').textContent`, name)).String()
	n, err := strconv.Atoi(s)
	require.NoError(t, err, "count-%s shows a number", name)
	return n
}

func (b *browser) maxCount(t *testing.T, name string) int {
	t.Helper()
	return b.eval(t, fmt.Sprintf(`window.__e2e.max[%q] ?? 0`, name)).Int()
}

func (b *browser) states(t *testing.T, id int) []string {
	t.Helper()
	raw := b.eval(t, fmt.Sprintf(`window.__e2e.states["%d"] ?? []`, id)).raw
	var s []string
	require.NoError(t, json.Unmarshal(raw, &s))
	return s
}

// artifacts returns the directory for screenshots: ARTIFACTS_DIR, or
// <repo>/artifacts.
func artifacts(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("ARTIFACTS_DIR")
	if dir == "" {
		root, err := testenv.RepoRoot()
		require.NoError(t, err)
		dir = filepath.Join(root, "artifacts")
	}
	require.NoError(t, os.MkdirAll(dir, 0o755))
	return dir
}

// shootAs saves a screenshot of the page as it is to the artifacts
// directory under name.
func (b *browser) shootAs(t *testing.T, name string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	require.NoError(t, err, "screenshot %s", name)
	path := filepath.Join(artifacts(t), name)
	require.NoError(t, os.WriteFile(path, png, 0o644))
	t.Logf("screenshot %s (%d KB)", path, len(png)/1024)
	return png
}

// jsonUnmarshal decodes JSON text.
func jsonUnmarshal(text string, v any) error { return json.Unmarshal([]byte(text), v) }

// screenshots saves the board in the light and dark themes and on a
// phone-sized screen to ARTIFACTS_DIR (default <repo>/artifacts) as
// <name>-light.png and so on, and with -update-docs the light one of
// "board" to docs/board.png.
func (b *browser) screenshots(t *testing.T, name string) {
	t.Helper()
	root, err := testenv.RepoRoot()
	require.NoError(t, err)
	shoot := func(name, scheme string, w, h int64, mobile bool) []byte {
		var opts []chromedp.EmulateViewportOption
		if mobile {
			opts = append(opts, chromedp.EmulateMobile, chromedp.EmulateTouch)
		}
		b.do(t, "emulate "+name,
			chromedp.EmulateViewport(w, h, opts...),
			chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
				_, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
					Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}},
				})
				return err
			}),
			chromedp.Evaluate[chromedp.Void](`window.scrollTo(0, 0)`),
			chromedp.Sleep(300*time.Millisecond))
		return b.shootAs(t, name)
	}
	light := shoot(name+"-light.png", "light", 1280, 900, false)
	shoot(name+"-dark.png", "dark", 1280, 900, false)
	shoot(name+"-phone.png", "light", 390, 844, true)
	shoot(name+"-phone-dark.png", "dark", 390, 844, true)
	b.do(t, "back to the desktop", chromedp.EmulateViewport(1280, 900))
	if *updateDocs && name == "board" {
		path := filepath.Join(root, "docs", "board.png")
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, light, 0o644))
		t.Logf("wrote %s", path)
	}
}

// managerClient talks to the manager directly, as curl would.
type managerClient struct {
	t    *testing.T
	base string
}

func (c managerClient) put(payload string) int {
	c.t.Helper()
	res, err := http.Post(c.base+"/?tube=default", "application/json", bytes.NewBufferString(payload))
	require.NoError(c.t, err)
	defer res.Body.Close()
	require.Equal(c.t, http.StatusCreated, res.StatusCode, "POST a job")
	var body struct {
		ID int `json:"id"`
	}
	require.NoError(c.t, json.NewDecoder(res.Body).Decode(&body))
	require.Positive(c.t, body.ID)
	return body.ID
}

// result returns the stored result of job id (a zero Result while the
// job is still in the queue).
func (c managerClient) result(id int) job.Result {
	c.t.Helper()
	r, err := c.fetch(id)
	require.NoError(c.t, err)
	return r
}

func (c managerClient) fetch(id int) (job.Result, error) {
	res, err := http.Get(fmt.Sprintf("%s/%d/", c.base, id))
	if err != nil {
		return job.Result{}, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return job.Result{}, fmt.Errorf("GET job %d: %s", id, res.Status)
	}
	var r job.Result
	if err := json.NewDecoder(res.Body).Decode(&r); err != nil {
		return job.Result{}, fmt.Errorf("GET job %d: %w", id, err)
	}
	return r, nil
}

// waitResult polls the manager until job id has a stored result.
func (c managerClient) waitResult(id int, within time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(within)
	for {
		r, err := c.fetch(id)
		if err == nil && r.Hash != "" {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("job %d did not complete within %s (last: %+v, %v)", id, within, r, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

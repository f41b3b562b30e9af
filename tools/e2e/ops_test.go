package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/testenv"
)

// viewports are the sizes every operations check runs at.
var viewports = []struct {
	name string
	w, h int64
	// mobile emulates a phone (touch, mobile layout).
	mobile bool
}{{"desktop", 1280, 900, false}, {"phone", 390, 844, true}}

// startOpsStack runs the services on a beanstalkd of the test's own: the
// workers take "default" (md5) and the failing tubes (the built-in fail
// handler, buried at the first failure, each failure recorded).
func startOpsStack(t *testing.T, failing ...string) *testenv.Stack {
	t.Helper()
	b := testenv.Setup(t)
	b.Beanstalk = testenv.StartBeanstalkd(t, testenv.BeanstalkdOptions{})
	tubes := append([]string{"default"}, failing...)
	var handlers []string
	for _, f := range failing {
		handlers = append(handlers, f+":fail")
	}
	return testenv.StartStack(t, b, testenv.StackOptions{
		WorkerEnv: map[string]string{
			"WORKER_TUBES":        strings.Join(tubes, ","),
			"WORKER_HANDLERS":     strings.Join(handlers, ","),
			"WORKER_MAX_ATTEMPTS": "1",
			"WORKER_CONCURRENCY":  "4",
			"WORK_DELAY":          "10ms",
		},
	})
}

// opsClient is curl against the manager.
type opsClient struct {
	t    *testing.T
	base string
}

func (c opsClient) do(method, path, body string) (int, map[string]any) {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, strings.NewReader(body))
	require.NoError(c.t, err)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(c.t, err)
	defer res.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(res.Body).Decode(&out)
	return res.StatusCode, out
}

func (c opsClient) put(tube, payload string) int {
	c.t.Helper()
	status, out := c.do("POST", "/?tube="+url.QueryEscape(tube), payload)
	require.Equal(c.t, http.StatusCreated, status, "%v", out)
	return int(out["id"].(float64))
}

// listed returns GET /jobs's jobs.
func (c opsClient) listed(query string) []map[string]any {
	c.t.Helper()
	status, out := c.do("GET", "/jobs?"+query, "")
	require.Equal(c.t, http.StatusOK, status, "%v", out)
	var jobs []map[string]any
	for _, j := range out["jobs"].([]any) {
		jobs = append(jobs, j.(map[string]any))
	}
	return jobs
}

// waitListed polls GET /jobs until it lists n jobs.
func (c opsClient) waitListed(query string, n int) []map[string]any {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		jobs := c.listed(query)
		if len(jobs) == n {
			return jobs
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("GET /jobs?%s listed %d jobs, want %d: %v", query, len(jobs), n, jobs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// emulate sets the viewport of vp.
func (b *browser) emulate(t *testing.T, w, h int64, mobile bool) {
	t.Helper()
	var opts []chromedp.EmulateViewportOption
	if mobile {
		opts = append(opts, chromedp.EmulateMobile, chromedp.EmulateTouch)
	}
	b.do(t, "emulate the viewport", chromedp.EmulateViewport(w, h, opts...))
}

// axeViolations runs axe-core (vendored under testdata, never served) on
// the page and returns its serious and critical violations.
func (b *browser) axeViolations(t *testing.T) []string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("testdata", "axe", "axe.min.js"))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
	defer cancel()
	_, err = chromedp.Run(ctx, chromedp.Evaluate[chromedp.Void]("window.axe ? 1 : ((() => {"+string(src)+"\n})(), 1)"))
	require.NoError(t, err, "load axe-core")
	// Colours are checked once the finite animations (a toast fading in)
	// have ended: mid-fade, any text is low-contrast.
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[string](`Promise.all(document.getAnimations()
	  .filter((a) => a.effect?.getComputedTiming().iterations !== Infinity).map((a) => a.finished.catch(() => {})))
	  .then(() => axe.run(document, { resultTypes: ['violations'] })).then((r) => JSON.stringify(
	  r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')
	    .map((v) => v.impact + ' ' + v.id + ': ' + v.nodes.length + ' × ' + v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(' | '))))`,
		chromedp.EvalAwaitPromise))
	require.NoError(t, err, "run axe-core")
	var out []string
	require.NoError(t, json.Unmarshal([]byte(raw), &out))
	return out
}

// TestBoardOperations is the operations console as an operator uses it,
// on a desktop and on a phone: a deep link to the buried jobs of a failing
// tube with their payloads and errors, search, Kick, Delete with its
// confirmation, Kick all, Pause and Resume, back and forward, Run again of
// a completed job, the job's own link, Escape, and axe-core's verdict.
func TestBoardOperations(t *testing.T) {
	t.Parallel()
	chrome := chromiumPath(t)
	var tubes []string
	for _, vp := range viewports {
		tubes = append(tubes, "doomed-"+vp.name)
	}
	st := startOpsStack(t, tubes...)
	api := opsClient{t: t, base: st.ManagerURL}
	br := startBrowser(t, chrome)

	done := api.put("default", `{"e2e":"completed, to run again"}`)
	managerClient{t: t, base: st.ManagerURL}.waitResult(done, 30*time.Second)

	for i, vp := range viewports {
		tube := tubes[i]
		t.Run(vp.name, func(t *testing.T) {
			var ids []int
			for n := range 3 {
				ids = append(ids, api.put(tube, fmt.Sprintf(`{"e2e":"doomed","vp":%q,"n":%d,"marker":"m%d-%s"}`, vp.name, n, n, vp.name)))
			}
			api.waitListed("state=buried&tube="+tube, 3)
			// The manager's id fence puts each job held and kicks it once
			// checked: the kicks below are counted from where they start.
			kicks := func(id int) float64 {
				_, s := api.do("GET", fmt.Sprintf("/%d/", id), "")
				n, _ := s["kicks"].(float64)
				return n
			}
			kicked := []float64{kicks(ids[0]), kicks(ids[1]), kicks(ids[2])}

			t.Log("a deep link opens the buried jobs of the tube, with payload and error")
			link := st.NotifierURL + "/#/jobs?state=buried&tube=" + url.QueryEscape(tube)
			br.emulate(t, vp.w, vp.h, vp.mobile)
			br.do(t, "open the deep link", chromedp.Navigate(link))
			br.wait(t, "the three rows", `document.querySelectorAll('[data-testid=ops-row]').length === 3`, 20*time.Second)
			require.Equal(t, "#/jobs?state=buried&tube="+url.QueryEscape(tube), br.eval(t, `location.hash`).String(), "the address bar shows the list")
			text := br.eval(t, `document.querySelector('[data-testid=ops]').innerText`).String()
			require.Contains(t, text, `the "fail" handler always fails`, "the error is shown")
			require.Contains(t, text, `"marker": "m1-`+vp.name+`"`, "the payload is shown")
			br.wait(t, "the connection opens", `document.querySelector('[data-testid=connection]').dataset.state === 'open'`, 20*time.Second)
			br.wait(t, "the first stats", `document.querySelector('[data-testid=connection]').textContent.includes('Live')`, 20*time.Second)
			require.Empty(t, br.axeViolations(t), "axe-core: serious or critical violations on the list")

			t.Log("search within the listed payloads")
			br.retype(t, "[data-testid=ops-search]", "m2-"+vp.name)
			require.Equal(t, 1, br.eval(t, `[...document.querySelectorAll('[data-testid=ops-row]')].filter((r) => !r.hidden).length`).Int())
			require.Contains(t, br.eval(t, `location.hash`).String(), "q=m2-", "the search is in the link")
			br.retype(t, "[data-testid=ops-search]", "#")
			require.Equal(t, 3, br.eval(t, `[...document.querySelectorAll('[data-testid=ops-row]')].filter((r) => !r.hidden).length`).Int())

			t.Log("search by tube: the list of another tube, and back")
			br.retype(t, "[data-testid=ops-tube]", "default")
			br.do(t, "apply", chromedp.Click(chromedp.CSS(`.ops-tools button[type=submit]`)))
			br.wait(t, "the other tube's list", `location.hash.startsWith('#/jobs?state=buried&tube=default') && document.querySelector('[data-testid=ops-info]')?.textContent.includes('none listed')`, 10*time.Second)
			br.do(t, "back", chromedp.NavigateBack())
			br.wait(t, "the three rows again", `document.querySelectorAll('[data-testid=ops-row]').length === 3`, 10*time.Second)

			row := func(id int) string { return fmt.Sprintf(`[data-testid=ops-row][data-job-id="%d"]`, id) }
			t.Log("Kick")
			br.do(t, "kick", chromedp.Click(chromedp.CSS(row(ids[0])+` [data-testid=row-kick]`)))
			br.wait(t, "the row is kicked", fmt.Sprintf(`document.querySelector('%s').querySelector('[data-testid=ops-note]')?.textContent.includes('Kicked')`, row(ids[0])), 10*time.Second)
			require.Equal(t, kicked[0]+1, kicks(ids[0]), "beanstalkd counted the kick")

			t.Log("Delete asks first; Cancel keeps the job")
			br.do(t, "delete", chromedp.Click(chromedp.CSS(row(ids[1])+` [data-testid=row-delete]`)))
			br.wait(t, "the confirmation", `document.getElementById('confirm-dialog').open`, 5*time.Second)
			require.Contains(t, br.eval(t, `document.getElementById('confirm-text').textContent`).String(), fmt.Sprintf("#%d", ids[1]))
			br.do(t, "cancel", chromedp.Click(chromedp.CSS(`[data-testid=confirm-cancel]`)))
			status, _ := api.do("GET", fmt.Sprintf("/%d/", ids[1]), "")
			require.Equal(t, http.StatusOK, status, "cancelled: the job is still there")
			br.do(t, "delete", chromedp.Click(chromedp.CSS(row(ids[1])+` [data-testid=row-delete]`)))
			br.wait(t, "the confirmation", `document.getElementById('confirm-dialog').open`, 5*time.Second)
			br.do(t, "confirm", chromedp.Click(chromedp.CSS(`[data-testid=confirm-ok]`)))
			br.wait(t, "the row goes", fmt.Sprintf(`!document.querySelector('%s')`, row(ids[1])), 10*time.Second)
			status, _ = api.do("GET", fmt.Sprintf("/%d/", ids[1]), "")
			require.Equal(t, http.StatusNotFound, status, "the job is deleted")

			t.Log("Refresh lists again")
			api.waitListed("state=buried&tube="+tube, 2) // the kicked one failed again
			br.do(t, "refresh", chromedp.Click(chromedp.CSS(`[data-testid=ops-refresh]`)))
			br.wait(t, "the two rows", `document.querySelectorAll('[data-testid=ops-row]').length === 2`, 10*time.Second)

			t.Log("Kick all, confirmed")
			br.do(t, "kick all", chromedp.Click(chromedp.CSS(`[data-testid=kick-all]`)))
			br.wait(t, "the confirmation", `document.getElementById('confirm-dialog').open`, 5*time.Second)
			br.do(t, "confirm", chromedp.Click(chromedp.CSS(`[data-testid=confirm-ok]`)))
			br.wait(t, "the toast", `document.getElementById('toasts').textContent.includes('Kicked')`, 10*time.Second)
			require.Eventually(t, func() bool {
				return kicks(ids[2]) == kicked[2]+1
			}, 10*time.Second, 100*time.Millisecond, "Kick all kicked the last one")

			t.Log("the tube's page: Pause, confirmed, and Resume")
			br.do(t, "open the tube", chromedp.Click(chromedp.CSS(`[data-testid=ops-tube-link]`)))
			br.wait(t, "the tube's page", `location.hash.startsWith('#/tube/') && document.querySelector('[data-testid=tube-paused]')?.textContent === 'no'`, 10*time.Second)
			br.do(t, "pause", chromedp.Click(chromedp.CSS(`[data-testid=tube-pause]`)))
			br.wait(t, "the confirmation", `document.getElementById('confirm-dialog').open`, 5*time.Second)
			br.do(t, "confirm", chromedp.Click(chromedp.CSS(`[data-testid=confirm-ok]`)))
			br.wait(t, "shown paused", `document.querySelector('[data-testid=tube-paused]')?.textContent.startsWith('yes')`, 10*time.Second)
			_, info := api.do("GET", "/tubes/"+url.PathEscape(tube), "")
			require.EqualValues(t, 60, info["pause"], "GET /tubes/T shows the pause")
			require.Empty(t, br.axeViolations(t), "axe-core: serious or critical violations on the tube's page")
			br.do(t, "resume", chromedp.Click(chromedp.CSS(`[data-testid=tube-resume]`)))
			br.wait(t, "shown running", `document.querySelector('[data-testid=tube-paused]')?.textContent === 'no'`, 10*time.Second)
			_, info = api.do("GET", "/tubes/"+url.PathEscape(tube), "")
			require.EqualValues(t, 0, info["pause"])

			t.Log("back and forward")
			br.do(t, "back", chromedp.NavigateBack())
			br.wait(t, "the list again", `location.hash.startsWith('#/jobs?state=buried') && document.getElementById('ops-heading').textContent.startsWith('Buried')`, 10*time.Second)
			br.do(t, "forward", chromedp.NavigateForward())
			br.wait(t, "the tube again", `location.hash.startsWith('#/tube/') && document.getElementById('ops-heading').textContent.startsWith('Tube')`, 10*time.Second)

			t.Log("a job's own link: the buried job with its payload and error; Escape closes it")
			br.do(t, "open the job's link", chromedp.Navigate(fmt.Sprintf("%s/#/job/%d", st.NotifierURL, ids[2])))
			br.wait(t, "the detail", `document.querySelector('[data-testid=detail-note]')`, 15*time.Second)
			note := br.eval(t, `document.querySelector('[data-testid=detail]').textContent`).String()
			require.NotContains(t, note, "when a worker completes it", "a buried job waits for a kick, not a worker")
			require.Contains(t, note, "until it is kicked")
			br.wait(t, "its payload and error", `document.querySelector('[data-testid=detail-payload]') && document.querySelector('[data-testid=detail-error]')`, 10*time.Second)
			require.Contains(t, br.eval(t, `document.querySelector('[data-testid=detail-payload]').textContent`).String(), `"marker": "m2-`+vp.name+`"`)
			require.Contains(t, br.eval(t, `document.querySelector('[data-testid=detail-error]').textContent`).String(), `the "fail" handler always fails`)
			require.Equal(t, fmt.Sprint(ids[2]), br.eval(t, `document.querySelector('[data-testid=lookup-id]').value`).String())
			require.Empty(t, br.axeViolations(t), "axe-core: serious or critical violations with the detail open")
			br.do(t, "press Escape", chromedp.KeyEvent("\x1b"))
			br.wait(t, "the detail closes", `document.querySelector('[data-testid=detail]').hidden`, 5*time.Second)
			require.Empty(t, br.eval(t, `document.querySelector('[data-testid=lookup-id]').value`).String(), "the lookup box forgets the id")
			require.Equal(t, "#/", br.eval(t, `location.hash`).String())

			t.Log("a card opens its list; Run again from the completed list")
			br.do(t, "click the Completed card", chromedp.Click(chromedp.CSS(`[data-testid=card-completed]`)))
			br.wait(t, "the completed list's route", `location.hash === '#/jobs?state=completed'`, 10*time.Second)
			br.wait(t, "the completed list", fmt.Sprintf(`document.querySelector('[data-testid=ops-row][data-job-id="%d"]')`, done), 15*time.Second)
			br.do(t, "run again", chromedp.Click(chromedp.CSS(fmt.Sprintf(`[data-testid=ops-row][data-job-id="%d"] [data-testid=row-rerun]`, done))))
			br.wait(t, "the new job completes, live", `document.querySelector('[data-testid=ops-note] .badge')?.dataset.state === 'completed'`, 30*time.Second)
			again := br.eval(t, `Number(document.querySelector('[data-testid=rerun-link]').textContent.slice(1))`).Int()
			require.Greater(t, again, done, "a new id")
			r := managerClient{t: t, base: st.ManagerURL}.result(again)
			require.Equal(t, `{"e2e":"completed, to run again"}`, r.Payload, "the same payload")

			t.Log("the tubes table has no clipped column")
			br.do(t, "home", chromedp.Evaluate[chromedp.Void](`location.hash = '#/'`))
			br.wait(t, "the tubes table", `document.querySelectorAll('#tubes-body tr').length > 0`, 10*time.Second)
			require.True(t, br.eval(t, `(() => { const s = document.querySelector('.table-scroll'); return s.scrollWidth <= s.clientWidth; })()`).Bool(),
				"the tubes table fits its card: Buried is not cut off: %s", br.eval(t, `(() => { const s = document.querySelector('.table-scroll'); return JSON.stringify([s.scrollWidth, s.clientWidth, [...document.querySelectorAll('.tubes thead th')].map((th) => th.textContent.trim() + ':' + th.getBoundingClientRect().width)]); })()`).String())
			require.Empty(t, br.axeViolations(t), "axe-core: serious or critical violations on the board")
			br.do(t, "the dark theme", chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
				_, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
					Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}},
				})
				return err
			}), chromedp.Sleep(time.Second)) // the colours' transitions end
			require.Empty(t, br.axeViolations(t), "axe-core: serious or critical violations on the board, dark")
			br.do(t, "the list, dark", chromedp.Evaluate[chromedp.Void](`location.hash = '#/jobs?state=buried'`))
			br.wait(t, "the rows", `document.querySelectorAll('[data-testid=ops-row]').length > 0`, 10*time.Second)
			require.Empty(t, br.axeViolations(t), "axe-core: serious or critical violations on the list, dark")
			br.do(t, "back to light", chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
				_, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{})
				return err
			}))
			br.shootAs(t, "board-ops-"+vp.name+".png")
		})
	}
	br.mu.Lock()
	defer br.mu.Unlock()
	require.Empty(t, br.errors, "errors in the browser console")
}

// holdJS holds the board's WebSocket until window.__openWS() and drops its
// stats frames until window.__passStats(): the moments a test needs to
// look at (a socket that opens late, the gap before the first stats).
const holdJS = `(() => {
  const Real = window.WebSocket;
  let release;
  const gate = new Promise((r) => { release = r; });
  window.__openWS = () => release();
  window.__stats = false;
  window.__passStats = () => { window.__stats = true; };
  window.WebSocket = function (url, protocols) {
    const ws = new EventTarget();
    ws.readyState = 0;
    gate.then(() => {
      const real = new Real(url, protocols);
      ws.send = (d) => real.send(d);
      ws.close = (c, r) => real.close(c, r);
      real.onopen = (e) => { ws.readyState = 1; ws.onopen?.(e); };
      real.onclose = (e) => { ws.readyState = 3; ws.onclose?.(e); };
      real.onerror = (e) => ws.onerror?.(e);
      real.onmessage = (e) => {
        if (!window.__stats && typeof e.data === 'string' && e.data.includes('"type":"stats"')) return;
        ws.onmessage?.(e);
      };
    });
    ws.send = () => {};
    ws.close = () => {};
    return ws;
  };
  window.WebSocket.OPEN = 1;
})()`

// TestBoardCountsYouCanTrust: "completed since load" counts every
// completion after the load however late the socket opens (the first
// connection asked for ?last=50 and counted 50 of 60); no "Live" with
// zeros before the first stats; the all-time total from the store;
// counters marked stale while the notifier is away; and back within 5 s
// of it.
func TestBoardCountsYouCanTrust(t *testing.T) {
	t.Parallel()
	chrome := chromiumPath(t)
	st := startOpsStack(t)
	api := managerClient{t: t, base: st.ManagerURL}
	ops := opsClient{t: t, base: st.ManagerURL}
	for i := range 5 {
		api.waitResult(api.put(fmt.Sprintf(`{"e2e":"before the load","i":%d}`, i)), 30*time.Second)
	}
	br := startBrowser(t, chrome)
	br.do(t, "hold the socket", chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		_, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: holdJS})
		return err
	}))
	br.do(t, "open the board", chromedp.EmulateViewport(1280, 900), chromedp.Navigate(st.NotifierURL+"/"))
	br.wait(t, "the page runs", `typeof window.__openWS === 'function' && document.querySelector('[data-testid=connection]')`, 10*time.Second)

	t.Log("60 jobs complete after the load, before the socket opens")
	var ids []int
	for i := range 60 {
		ids = append(ids, api.put(fmt.Sprintf(`{"e2e":"after the load","i":%d}`, i)))
	}
	for _, id := range ids {
		api.waitResult(id, 60*time.Second)
	}
	br.do(t, "let the socket open", chromedp.Evaluate[chromedp.Void](`window.__openWS()`))
	br.wait(t, "the socket opens", `document.querySelector('[data-testid=connection]').dataset.state === 'open'`, 20*time.Second)
	br.do(t, "a stats frame would have come", chromedp.Sleep(1500*time.Millisecond))
	require.NotContains(t, br.eval(t, `document.querySelector('[data-testid=connection]').textContent`).String(), "Live", "no Live before the first stats")
	require.Equal(t, "–", br.eval(t, `document.querySelector('[data-testid=count-ready]').textContent`).String(), "no zeros before the first stats")
	br.do(t, "pass the stats", chromedp.Evaluate[chromedp.Void](`window.__passStats()`))
	br.wait(t, "Live with the first stats", `document.querySelector('[data-testid=connection]').textContent.includes('Live') && document.querySelector('[data-testid=count-ready]').textContent === '0'`, 10*time.Second)
	br.wait(t, "every completion since the load", `document.querySelector('[data-testid=count-completed]').textContent === '60'`, 20*time.Second)
	br.do(t, "settle", chromedp.Sleep(time.Second))
	require.Equal(t, 60, br.count(t, "completed"), "completed since load is exact")
	require.Equal(t, "65", br.eval(t, `document.querySelector('[data-testid=count-completed-total]').textContent`).String(), "the all-time total")
	require.Equal(t, "false", br.eval(t, `document.querySelector('[data-testid=counters]').dataset.stale`).String())
	require.Equal(t, "ok", br.eval(t, `document.querySelector('[data-testid=manager-health]').dataset.state`).String(), "the manager's health")

	t.Log("one more completion counts in both")
	api.waitResult(api.put(`{"e2e":"live"}`), 30*time.Second)
	br.wait(t, "counted", `document.querySelector('[data-testid=count-completed]').textContent === '61' && document.querySelector('[data-testid=count-completed-total]').textContent === '66'`, 20*time.Second)
	_, out := ops.do("GET", "/jobs?state=completed&limit=1", "")
	require.EqualValues(t, 66, out["total"], "the store agrees")

	t.Log("the notifier goes: the counters are stale; it comes back: the board is back within 5 s")
	br.expectWSErrors.Store(true)
	st.Notifier.Stop()
	br.wait(t, "stale", `document.querySelector('[data-testid=counters]').dataset.stale === 'true'`, 20*time.Second)
	require.Contains(t, br.eval(t, `document.querySelector('[data-testid=stale-note]').textContent`).String(), "stale", "and say so to screen readers")
	require.Equal(t, " · stale", br.eval(t, `getComputedStyle(document.querySelector('[data-kind=buried] .counter-name'), '::after').content.replaceAll('"', '')`).String(), "and on screen")
	br.do(t, "stay away long enough for the back-off to grow", chromedp.Sleep(15*time.Second))
	require.NoError(t, st.Notifier.Restart())
	back := time.Now()
	br.wait(t, "back", `document.querySelector('[data-testid=connection]').dataset.state === 'open'`, 15*time.Second)
	require.Less(t, time.Since(back), 5*time.Second, "the board is back within 5 s of the notifier")
	br.wait(t, "fresh again", `document.querySelector('[data-testid=counters]').dataset.stale === 'false'`, 10*time.Second)
	br.do(t, "settle", chromedp.Sleep(500*time.Millisecond))
	br.expectWSErrors.Store(false)

	t.Log("an error from the proxy's 502 goes once the manager is back")
	br.expectNetErrors.Store(true)
	st.Manager.Stop()
	br.wait(t, "the health says the API is down", `document.querySelector('[data-testid=manager-health]').dataset.state === 'down'`, 15*time.Second)
	br.typePayload(t, `{"e2e":"while the manager is away"}`)
	br.do(t, "submit", chromedp.Click(chromedp.CSS(`[data-testid=submit]`)))
	br.wait(t, "the submit fails", `document.getElementById('submit-error').textContent.includes('manager')`, 10*time.Second)
	require.NoError(t, st.Manager.Restart())
	br.wait(t, "the health says ok", `document.querySelector('[data-testid=manager-health]').dataset.state === 'ok'`, 15*time.Second)
	br.wait(t, "the error goes", `document.getElementById('submit-error').textContent === ''`, 5*time.Second)
	br.expectNetErrors.Store(false)

	br.mu.Lock()
	defer br.mu.Unlock()
	require.Empty(t, br.errors, "errors in the browser console")
}

// TestReconnectBackoffIsCapped: the WebSocket's wait between attempts
// never passes 4 s (it grew to 30 s), so the board is back within about
// 5 s of the notifier however long it was away.
func TestReconnectBackoffIsCapped(t *testing.T) {
	t.Parallel()
	br := moduleBrowser(t)
	var worst float64
	br.run(t, `const { backoff } = await import('/ws.js');
	  let worst = 0;
	  for (let a = 1; a <= 40; a++) for (let i = 0; i < 50; i++) worst = Math.max(worst, backoff(a));
	  return worst;`, &worst)
	require.LessOrEqual(t, worst, 4000.0)
	require.Greater(t, worst, 1000.0, "it still backs off")
}

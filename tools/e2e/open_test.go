package e2e

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/job"
)

// TestBoardAsANewVisitorSeesIt is what someone who had not seen the board
// before ran into: an empty board after jobs had just completed, a stray
// "null" in My jobs, errors that outlived their cause, a frozen lookup,
// an oversized payload shown as fine, and links too small to tap.
func TestBoardAsANewVisitorSeesIt(t *testing.T) {
	t.Parallel()
	chrome := chromiumPath(t)

	st := startBoardStack(t, "20ms", "mongo-express=http://127.0.0.1:8081")
	api := managerClient{t: t, base: st.ManagerURL}

	t.Log("60 jobs complete before anyone opens the board")
	var results []job.Result
	for i := range 60 {
		id := api.put(fmt.Sprintf(`{"e2e":"before the board","i":%d}`, i))
		api.waitResult(id, 30*time.Second)
		results = append(results, api.result(id))
	}
	// The board shows the last 50 by cursor, newest first.
	slices.SortFunc(results, func(a, b job.Result) int {
		return -cmp.Or(a.StoredAt.Compare(b.StoredAt), cmp.Compare(a.ID, b.ID))
	})
	var want []string
	for _, r := range results[:50] {
		want = append(want, strconv.FormatUint(r.ID, 10))
	}

	br := startBrowser(t, chrome)
	open := func(what string, action chromedp.Action[chromedp.Void]) {
		t.Helper()
		br.do(t, what, chromedp.EmulateViewport(1280, 900), action)
		br.wait(t, "the connection opens", `document.querySelector('[data-testid=connection]').dataset.state === 'open'`, 20*time.Second)
		br.wait(t, "the last 50 completions are shown", `document.querySelectorAll('[data-testid=feed] [data-testid=job-row]').length >= 50`, 20*time.Second)
		br.do(t, "settle", chromedp.Sleep(time.Second))
		assert.Equal(t, want, feedIDs(t, br), "%s: the last 50 completions, newest first", what)
		assert.Equal(t, 50, br.eval(t, `document.querySelectorAll('[data-testid=feed] [data-testid=job-row][data-earlier=true]').length`).Int(),
			"%s: each marked as earlier than the page", what)
		assert.True(t, br.eval(t, `!document.getElementById('feed-earlier').hidden && document.getElementById('feed-empty').hidden`).Bool(),
			"%s: the feed says what the faded rows are, and no longer that it waits", what)
		assert.Equal(t, 0, br.count(t, "completed"), "%s: completed since load counts none of them", what)
		assert.Zero(t, br.eval(t, duplicateRowsJS).Int(), "%s: no job twice in the feed", what)
	}
	t.Log("a fresh load shows the recent completions")
	open("open the board", chromedp.Navigate(st.NotifierURL+"/"))
	assert.Contains(t, br.eval(t, `document.querySelector('.tubes thead').textContent`).String(), "Completed since load",
		"the Tubes table says what its Completed column counts")
	t.Log("and so does a reload")
	open("reload the board", chromedp.Reload())
	br.do(t, "install the recorder", chromedp.Evaluate[chromedp.Void](recorderJS))

	t.Log("a completion after the load is live: counted, not faded")
	live := api.put(`{"e2e":"after the load"}`)
	br.wait(t, "the live completion tops the feed", fmt.Sprintf(`document.querySelector('[data-testid=feed] [data-testid=job-row]')?.dataset.jobId === '%d'`, live), 20*time.Second)
	assert.Empty(t, br.eval(t, `document.querySelector('[data-testid=feed] [data-testid=job-row]').dataset.earlier ?? ''`).String(), "a live completion is not marked earlier")
	br.wait(t, "count-completed counts it", `document.querySelector('[data-testid=count-completed]').textContent === '1'`, 10*time.Second)
	assert.Contains(t, br.eval(t, `document.getElementById('tubes-body').textContent`).String(), "default", "the tube is listed")

	t.Log("an unfinished job in My jobs has no stray text")
	br.typePayload(t, `{"e2e":"delayed a minute"}`)
	br.do(t, "submit a delayed job", chromedp.SetValue(chromedp.CSS(`[data-testid=delay]`), "120"), chromedp.Click(chromedp.CSS(`[data-testid=submit]`)))
	br.wait(t, "the job appears in My jobs", `document.querySelector('[data-testid=my-jobs] [data-testid=job-row]')?.dataset.state === 'delayed'`, 15*time.Second)
	delayed := br.eval(t, `Number(document.querySelector('[data-testid=my-jobs] [data-testid=job-row]').dataset.jobId)`).Int()
	br.do(t, "reset the delay", chromedp.SetValue(chromedp.CSS(`[data-testid=delay]`), "0"))
	assert.Equal(t, "[]", br.eval(t, `JSON.stringify([...document.querySelector('[data-testid=my-jobs] [data-testid=job-row]').childNodes].filter((n) => n.nodeType === Node.TEXT_NODE).map((n) => n.textContent))`).String(),
		"no bare text (the stray \"null\") among the item's parts")
	assert.NotContains(t, br.eval(t, `document.querySelector('[data-testid=my-jobs] [data-testid=job-row]').innerText`).String(), "null")

	t.Log("a looked-up queued job keeps ticking")
	br.do(t, "look it up", chromedp.SetValue(chromedp.CSS(`[data-testid=lookup-id]`), strconv.Itoa(delayed)),
		chromedp.Click(chromedp.CSS(`[data-testid=lookup-submit]`)))
	br.wait(t, "the detail shows the queued job", `document.querySelector('[data-testid=detail-age]')`, 15*time.Second)
	age0 := seconds(t, br.eval(t, `document.querySelector('[data-testid=detail-age]').textContent`).String())
	left0 := seconds(t, br.eval(t, `document.querySelector('[data-testid=detail-time-left]').textContent`).String())
	assert.Greater(t, left0, 100, "a delayed job has about its delay left")
	br.wait(t, "Age and Time left tick", fmt.Sprintf(`parseInt(document.querySelector('[data-testid=detail-age]').textContent) >= %d &&
	  parseInt(document.querySelector('[data-testid=detail-time-left]').textContent) <= %d`, age0+2, left0-2), 10*time.Second)
	assert.NotContains(t, br.eval(t, `document.querySelector('[data-testid=detail]').textContent`).String(), "Binlog",
		"no binlog (beanstalkd without -b): no binlog row")

	t.Log("a field's error goes when the field is edited")
	br.do(t, "submit a bad tube", chromedp.SetValue(chromedp.CSS(`[data-testid=tube]`), "-bad"), chromedp.Click(chromedp.CSS(`[data-testid=submit]`)))
	assert.Equal(t, "true", br.eval(t, `document.querySelector('[data-testid=tube]').getAttribute('aria-invalid')`).String())
	assert.NotEmpty(t, br.eval(t, `document.getElementById('submit-error').textContent`).String())
	br.retype(t, "[data-testid=tube]", "default")
	assert.False(t, br.eval(t, `document.querySelector('[data-testid=tube]').hasAttribute('aria-invalid')`).Bool(), "the outline goes on input")
	assert.Empty(t, br.eval(t, `document.getElementById('submit-error').textContent`).String(), "and so does the message")
	br.do(t, "look up a bad id", chromedp.SetValue(chromedp.CSS(`[data-testid=lookup-id]`), "abc"), chromedp.Click(chromedp.CSS(`[data-testid=lookup-submit]`)))
	assert.Equal(t, "true", br.eval(t, `document.querySelector('[data-testid=lookup-id]').getAttribute('aria-invalid')`).String())
	br.retype(t, "[data-testid=lookup-id]", "1")
	assert.False(t, br.eval(t, `document.querySelector('[data-testid=lookup-id]').hasAttribute('aria-invalid')`).Bool(), "the lookup's outline goes on input")
	assert.True(t, br.eval(t, `document.querySelector('[data-testid=detail]').hidden`).Bool(), "and so does its message")

	t.Log("a payload over MAX_JOB_SIZE is flagged before the submit")
	// 70 KiB of JSON: typing it key by key would take minutes.
	br.do(t, "paste a 70 KiB payload", chromedp.Evaluate[chromedp.Void](`(() => {
	  const ta = document.querySelector('[data-testid=payload]');
	  ta.value = JSON.stringify({ big: 'x'.repeat(70 * 1024) });
	  ta.dispatchEvent(new Event('input', { bubbles: true }));
	})()`))
	assert.Equal(t, "too-large", br.eval(t, `document.getElementById('payload-status').dataset.valid`).String(), "not shown as fine")
	status := br.eval(t, `document.getElementById('payload-status').textContent`).String()
	assert.Contains(t, status, "65,535 bytes", "the status names the limit")
	assert.NotContains(t, status, "Valid JSON ·")
	br.expectNetErrors.Store(true) // the browser logs the 413
	br.do(t, "submit it anyway", chromedp.Click(chromedp.CSS(`[data-testid=submit]`)))
	br.wait(t, "the API refuses it", `document.getElementById('submit-error').textContent.includes('MAX_JOB_SIZE')`, 15*time.Second)
	br.do(t, "settle", chromedp.Sleep(300*time.Millisecond))
	br.expectNetErrors.Store(false)
	br.typePayload(t, `{"e2e":"small again"}`)
	assert.Equal(t, "true", br.eval(t, `document.getElementById('payload-status').dataset.valid`).String())
	assert.Empty(t, br.eval(t, `document.getElementById('submit-error').textContent`).String(), "the refusal goes when the payload is edited")

	t.Log("\"Could not reach the API\" goes when the board is live again")
	br.expectWSErrors.Store(true)
	br.expectNetErrors.Store(true)
	st.Notifier.Stop()
	br.wait(t, "the board sees the notifier go", `document.querySelector('[data-testid=connection]').dataset.state !== 'open'`, 20*time.Second)
	br.do(t, "submit while the notifier is down", chromedp.Click(chromedp.CSS(`[data-testid=submit]`)))
	br.wait(t, "the submit says it could not reach the API", `document.getElementById('submit-error').textContent.includes('Could not reach the API')`, 15*time.Second)
	br.do(t, "look up while the notifier is down", chromedp.SetValue(chromedp.CSS(`[data-testid=lookup-id]`), strconv.Itoa(delayed)),
		chromedp.Click(chromedp.CSS(`[data-testid=lookup-submit]`)))
	br.wait(t, "the lookup says it could not reach the API", `document.querySelector('[data-testid=detail]').textContent.includes('Could not reach the API')`, 15*time.Second)
	require.NoError(t, st.Notifier.Restart(), "restart the notifier")
	br.wait(t, "the board reconnects", `document.querySelector('[data-testid=connection]').dataset.state === 'open'`, 60*time.Second)
	br.wait(t, "the submit error goes", `document.getElementById('submit-error').textContent === ''`, 5*time.Second)
	br.wait(t, "the lookup runs again", `document.querySelector('[data-testid=detail-age]')`, 15*time.Second)
	br.do(t, "settle", chromedp.Sleep(500*time.Millisecond))
	br.expectWSErrors.Store(false)
	br.expectNetErrors.Store(false)

	t.Log("on a phone every link is a 24 px touch target")
	br.do(t, "emulate a phone", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile, chromedp.EmulateTouch), chromedp.Sleep(300*time.Millisecond))
	var small []string
	raw := br.eval(t, `JSON.stringify([...document.querySelectorAll('.feed .job-link, .my-jobs .job-link, #links a, .detail button')]
	  .map((el) => [el.textContent.trim(), el.getBoundingClientRect().height]).filter(([, h]) => h < 24).map(([n, h]) => n + ': ' + h + ' px'))`).String()
	require.NoError(t, jsonUnmarshal(raw, &small))
	assert.Empty(t, small, "links and buttons under 24 px tall")
	assert.GreaterOrEqual(t, br.eval(t, `document.querySelectorAll('.feed .job-link').length`).Int(), 50, "measured the feed's links")
	br.do(t, "scroll to the feed", chromedp.Evaluate[chromedp.Void](`document.getElementById('feed-heading').scrollIntoView()`), chromedp.Sleep(300*time.Millisecond))
	br.shootAs(t, "board-open-phone-feed.png")
	br.screenshots(t, "board-open")

	br.mu.Lock()
	defer br.mu.Unlock()
	require.Empty(t, br.errors, "errors in the browser console")
}

// retype replaces the text of the input at selector by typing, as a
// user would: the input events fire.
func (b *browser) retype(t *testing.T, selector, text string) {
	t.Helper()
	b.do(t, "retype "+selector,
		chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`document.querySelector(%q).select()`, selector)),
		chromedp.SendKeys(chromedp.CSS(selector), text))
	require.Equal(t, text, b.eval(t, fmt.Sprintf(`document.querySelector(%q).value`, selector)).String())
}

// feedIDs returns the job ids of the feed's rows, top first.
func feedIDs(t *testing.T, br *browser) []string {
	t.Helper()
	var ids []string
	require.NoError(t, jsonUnmarshal(br.eval(t, `JSON.stringify([...document.querySelectorAll('[data-testid=feed] [data-testid=job-row]')].map((r) => r.dataset.jobId))`).String(), &ids))
	return ids
}

// seconds reads "12 s".
func seconds(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(s), " s"))
	require.NoError(t, err, "%q is a number of seconds", s)
	return n
}

package e2e

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestBoardShowsHandlerResults renders completed jobs as the notifier
// sends them: a handler's result (JSON, or base64 of output that was not
// text) in the detail and the feed, where md5's jobs show their hash.
func TestBoardShowsHandlerResults(t *testing.T) {
	t.Parallel()
	br := moduleBrowser(t)
	var got struct {
		Result     string `json:"result"`
		HasHashRow bool   `json:"hasHashRow"`
		B64Title   string `json:"b64Title"`
		MD5Hash    string `json:"md5Hash"`
		MD5Result  bool   `json:"md5Result"`
		FeedCell   string `json:"feedCell"`
		FeedLong   string `json:"feedLong"`
		FeedHash   string `json:"feedHash"`
	}
	br.run(t, `
document.body.innerHTML = '<section id="detail"></section><template id="feed-row"><div data-testid="job-row"><span><button class="job-link"></button></span><span></span><span><code data-testid="hash"></code></span><span></span><span></span><span></span></div></template>';
const { Detail } = await import('/detail.js');
const { Feed } = await import('/feed.js');
const d = new Detail({ api: {}, toast: () => {} });
const base = { payload: '{"text":"hello"}', tube: 'shout', worker: 'w1', attempts: 1, duration_ms: 3, completed_at: '2026-01-01T00:00:00Z' };
const out = {};
await d.show(7, { result: { _id: 7, ...base, result: { upper: 'HELLO' } } });
out.result = document.querySelector('#detail [data-testid=result]')?.textContent ?? '';
out.hasHashRow = !!document.querySelector('#detail [data-testid=hash]');
await d.show(8, { result: { _id: 8, ...base, result: '//4A', result_encoding: 'base64' } });
out.b64Title = [...document.querySelectorAll('#detail h4')].map((e) => e.textContent).join('|');
await d.show(9, { result: { _id: 9, ...base, hash: '09ee943c4fa33cd5a355eb7a4e38f7ef' } });
out.md5Hash = document.querySelector('#detail [data-testid=hash]')?.textContent ?? '';
out.md5Result = !!document.querySelector('#detail [data-testid=result]');
const f = { template: document.getElementById('feed-row'), byId: new Map() };
const cell = (r) => Feed.prototype.row.call(f, r).querySelector('[data-testid=hash]').textContent;
out.feedCell = cell({ _id: 7, ...base, result: { upper: 'HELLO' } });
out.feedLong = cell({ _id: 10, ...base, result: 'x'.repeat(200) });
out.feedHash = cell({ _id: 9, ...base, hash: 'abc' });
return out;
`, &got)
	require.JSONEq(t, `{"upper":"HELLO"}`, got.Result)
	require.False(t, got.HasHashRow, "no empty hash row for a handler that returned a result")
	require.Contains(t, got.B64Title, "base64")
	require.Equal(t, "09ee943c4fa33cd5a355eb7a4e38f7ef", got.MD5Hash)
	require.False(t, got.MD5Result)
	require.Equal(t, `{"upper":"HELLO"}`, got.FeedCell)
	require.Len(t, []rune(got.FeedLong), 64)
	require.Equal(t, "abc", got.FeedHash)
}

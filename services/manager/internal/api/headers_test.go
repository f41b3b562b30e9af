package api_test

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/job"
)

// TestAnswersAreNeverHTML: every answer says nosniff (do checks it on
// each), and <, > and & reach the client escaped as \u003c, \u003e and
// \u0026, in stored payloads and in error messages that quote the
// request, while a JSON parser reads the same strings.
func TestAnswersAreNeverHTML(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	payload := `{"html":"<script>alert(1)</script> & more"}`
	id := uint64(time.Now().UnixNano()>>8) & (1<<53 - 1)
	require.NoError(t, b.Results.Save(ctx(t), job.Result{ID: id, Hash: job.Hash(payload), Payload: payload}))

	r := do(t, "GET", b.URL+"/"+strconv.FormatUint(id, 10)+"/", "")
	require.Equal(t, http.StatusOK, r.StatusCode, "%s", r.Body)
	require.NotContains(t, string(r.Body), "<")
	require.NotContains(t, string(r.Body), ">")
	require.NotContains(t, string(r.Body), "&")
	require.Contains(t, string(r.Body), `\u003cscript\u003e`)
	require.Equal(t, payload, decode[job.Result](t, r).Payload)

	r = do(t, "GET", b.URL+"/%3Cb%3E&/", "")
	requireError(t, r, http.StatusBadRequest, `not "<b>&"`)
	require.NotContains(t, string(r.Body), "<")
	require.Contains(t, string(r.Body), `\u003cb\u003e\u0026`)
}

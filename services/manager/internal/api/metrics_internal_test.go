package api

import (
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

// TestMetricsLabelSetsAreFixed: a thousand tubes, methods and status codes
// from clients make a bounded number of series.
func TestMetricsLabelSetsAreFixed(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := newMetrics(reg)
	for i := range 1000 {
		m.enqueued("tube-" + strconv.Itoa(i))
		m.observe(routeOf("X"+strconv.Itoa(i), "/"+strconv.Itoa(i)), "X"+strconv.Itoa(i), 405, time.Millisecond)
		m.observe(routeOf("GET", "/a/"+strconv.Itoa(i)), "GET", 404, time.Millisecond)
		m.observe("/*", "GET", 1000+i, time.Millisecond)
	}
	series := map[string]int{}
	values := map[string]map[string]bool{}
	fams, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range fams {
		series[f.GetName()] = len(f.GetMetric())
		for _, mt := range f.GetMetric() {
			for _, l := range mt.GetLabel() {
				k := f.GetName() + "/" + l.GetName()
				if values[k] == nil {
					values[k] = map[string]bool{}
				}
				values[k][l.GetValue()] = true
			}
		}
	}
	require.Equal(t, maxTubeLabels+1, series["manager_jobs_enqueued_total"], "the first 100 tubes and _other")
	require.True(t, values["manager_jobs_enqueued_total/tube"]["_other"])
	require.Equal(t, map[string]bool{"OTHER": true, "GET": true}, values["manager_http_requests_total/method"])
	require.Equal(t, map[string]bool{"/:id": true, "/*": true}, values["manager_http_requests_total/route"])
	require.Equal(t, map[string]bool{"405": true, "404": true, "other": true}, values["manager_http_requests_total/code"])
	require.Equal(t, 2, series["manager_http_request_duration_seconds"])
}

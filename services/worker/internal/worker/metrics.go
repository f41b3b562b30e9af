package worker

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Reasons a job is released or buried, the values of the "reason" label.
const (
	ReasonHandlerFailed    = "handler_failed"
	ReasonStoreUnavailable = "store_unavailable"
	ReasonStoreError       = "store_error"
	ReasonShutdown         = "shutdown"
	ReasonMaxAttempts      = "max_attempts"
	ReasonConflict         = "conflict"
	ReasonSkipRetry        = "skip_retry"
)

// Metrics are the worker's Prometheus metrics.
type Metrics struct {
	Done     *prometheus.CounterVec
	Failed   *prometheus.CounterVec
	Buried   *prometheus.CounterVec
	Released *prometheus.CounterVec
	Duration *prometheus.HistogramVec
	InFlight prometheus.Gauge
}

// NewMetrics creates the metrics and registers them, with the Go and
// process collectors, on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Done: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jobs_done_total",
			Help: "Jobs whose result is stored and that were deleted from the queue.",
		}, []string{"tube"}),
		Failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jobs_failed_total",
			Help: "Attempts whose handler returned an error.",
		}, []string{"tube"}),
		Buried: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jobs_buried_total",
			Help: "Jobs buried, by reason: max_attempts (the handler kept failing) or conflict (a different result is stored under the id).",
		}, []string{"tube", "reason"}),
		Released: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jobs_released_total",
			Help: "Jobs released back to the queue, by reason: handler_failed, store_unavailable, store_error or shutdown.",
		}, []string{"tube", "reason"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "job_duration_seconds",
			Help:    "Time from reserve to delete of the jobs done.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"tube"}),
		InFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "jobs_in_flight",
			Help: "Jobs reserved and being worked on now.",
		}),
	}
	reg.MustRegister(m.Done, m.Failed, m.Buried, m.Released, m.Duration, m.InFlight,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

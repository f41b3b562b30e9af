package api

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// maxTubeLabels bounds the tube label: tube names come from clients.
const maxTubeLabels = 100

type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	jobs     *prometheus.CounterVec

	mu    sync.Mutex
	tubes map[string]bool
}

func newMetrics(reg *prometheus.Registry) *metrics {
	m := &metrics{
		reg: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "manager_http_requests_total",
			Help: "HTTP requests answered, by route, method (OTHER for unknown methods) and status code.",
		}, []string{"route", "method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "manager_http_request_duration_seconds",
			Help:    "Time to answer an HTTP request, by route.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"route"}),
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "manager_jobs_enqueued_total",
			Help: "Jobs put on beanstalkd, by tube (tubes past the first 100 count as _other).",
		}, []string{"tube"}),
		tubes: map[string]bool{},
	}
	reg.MustRegister(m.requests, m.latency, m.jobs, collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) observe(route, method string, status int, took time.Duration) {
	m.requests.WithLabelValues(route, methodLabel(method), codeLabel(status)).Inc()
	m.latency.WithLabelValues(route).Observe(took.Seconds())
}

func (m *metrics) enqueued(tube string) {
	m.mu.Lock()
	if !m.tubes[tube] {
		if len(m.tubes) >= maxTubeLabels {
			tube = "_other"
		} else {
			m.tubes[tube] = true
		}
	}
	m.mu.Unlock()
	m.jobs.WithLabelValues(tube).Inc()
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// methodLabel is the method as a label: a client may send any token as
// its method, and each would be a new series.
func methodLabel(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return method
	}
	return "OTHER"
}

// codeLabel is the status code as a label; the handlers only write
// standard codes, but the label set stays fixed whatever one writes.
func codeLabel(status int) string {
	if status < 100 || status > 599 {
		return "other"
	}
	return strconv.Itoa(status)
}

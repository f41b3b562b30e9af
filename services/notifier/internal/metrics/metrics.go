// Package metrics holds the notifier's Prometheus metrics, on a registry
// of their own so tests and several instances in one process do not
// collide.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the notifier's instruments.
type Metrics struct {
	Registry *prometheus.Registry
	// Clients is the number of connected clients by transport (ws, sse).
	Clients *prometheus.GaugeVec
	// EventsSent counts frames written to clients by type (job, stats,
	// gap, error).
	EventsSent *prometheus.CounterVec
	// Dropped counts clients the notifier closed by reason: slow (its
	// queue overflowed) or write_timeout (a write took longer than 5s).
	Dropped *prometheus.CounterVec
	// Rejected counts refused connections by reason (max_clients,
	// max_replays, origin, unauthorized, forbidden, bad_request,
	// max_pending: past NOTIFIER_MAX_PENDING, host: not in
	// NOTIFIER_ALLOWED_HOSTS) and
	// refused subscribes (max_watches).
	Rejected *prometheus.CounterVec
	// Completions counts completions the feed found.
	Completions prometheus.Counter
	// Mode is 1 for the feed's current mode (changestream or poll).
	Mode *prometheus.GaugeVec
	// PushLatency is the time from a result's completed_at to the moment
	// its frame is written to a client.
	PushLatency prometheus.Histogram
	// StoreLookups counts the queries for the results of watched jobs
	// gone from the queue whose completion the feed had not delivered
	// within the poll interval, and StoreLookupJobs the jobs they asked
	// about. On FerretDB each query reads the whole results collection.
	StoreLookups    prometheus.Counter
	StoreLookupJobs prometheus.Counter
	// Replays counts replays by where they read: memory (the recent
	// completions) or store.
	Replays *prometheus.CounterVec
	// RecentBytes is what the recent completions in memory cost, within
	// NOTIFIER_REPLAY_MEMORY.
	RecentBytes prometheus.Gauge
}

// New returns the metrics, registered on a new registry with the Go and
// process collectors.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Clients: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "notifier_clients", Help: "Connected clients by transport.",
		}, []string{"transport"}),
		EventsSent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "notifier_events_sent_total", Help: "Frames written to clients by message type.",
		}, []string{"type"}),
		Dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "notifier_clients_dropped_total", Help: "Clients closed by the notifier, by reason.",
		}, []string{"reason"}),
		Rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "notifier_connections_rejected_total", Help: "Connections refused before they were accepted, by reason.",
		}, []string{"reason"}),
		Completions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "notifier_completions_total", Help: "Completions found by the feed.",
		}),
		Mode: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "notifier_feed_mode", Help: "1 for the mode the completion feed runs in.",
		}, []string{"mode"}),
		PushLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "notifier_push_latency_seconds",
			Help:    "Time from a result's completed_at to its frame being written to a client.",
			Buckets: []float64{.005, .01, .025, .05, .1, .15, .2, .25, .3, .4, .5, .75, 1, 1.5, 2, 3, 5, 10},
		}),
		StoreLookups: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "notifier_store_lookups_total", Help: "Queries for the results of watched jobs gone from the queue that the feed had not delivered.",
		}),
		StoreLookupJobs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "notifier_store_lookup_jobs_total", Help: "Jobs asked about by those queries.",
		}),
		Replays: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "notifier_replays_total", Help: "Replays by where they read: memory or store.",
		}, []string{"from"}),
		RecentBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "notifier_recent_bytes", Help: "Bytes held by the recent completions that replays read from memory.",
		}),
	}
	m.Replays.WithLabelValues("memory")
	m.Replays.WithLabelValues("store")
	for _, t := range []string{"ws", "sse"} {
		m.Clients.WithLabelValues(t)
	}
	for _, mode := range []string{"changestream", "poll"} {
		m.Mode.WithLabelValues(mode)
	}
	m.Dropped.WithLabelValues("slow")
	m.Dropped.WithLabelValues("write_timeout")
	for _, r := range []string{"max_clients", "max_replays", "origin", "unauthorized", "forbidden", "bad_request", "max_watches", "max_pending", "host"} {
		m.Rejected.WithLabelValues(r)
	}
	m.Registry.MustRegister(m.Clients, m.EventsSent, m.Dropped, m.Rejected, m.Completions, m.Mode, m.PushLatency,
		m.StoreLookups, m.StoreLookupJobs, m.Replays, m.RecentBytes,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// SetMode marks mode as the current one.
func (m *Metrics) SetMode(mode string) {
	m.Mode.Reset()
	for _, k := range []string{"changestream", "poll"} {
		v := 0.0
		if k == mode {
			v = 1
		}
		m.Mode.WithLabelValues(k).Set(v)
	}
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}

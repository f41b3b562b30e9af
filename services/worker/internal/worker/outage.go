package worker

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// outage logs when a dependency goes away and when it comes back, once
// each, however many reservers notice: a down beanstalkd or MongoDB would
// otherwise fill the log with one line per retry.
type outage struct {
	log  *slog.Logger
	what string

	down  atomic.Bool // fast path for ok, which runs on every success
	mu    sync.Mutex
	since time.Time
}

func newOutage(log *slog.Logger, what string) *outage {
	return &outage{log: log, what: what}
}

// fail records a failure; the first one of an outage is logged.
func (o *outage) fail(err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.down.Load() {
		return
	}
	o.down.Store(true)
	o.since = time.Now()
	o.log.Error(o.what+" unavailable; retrying with backoff", "err", err)
}

// ok records a success; the first one after an outage is logged.
func (o *outage) ok() {
	if !o.down.Load() {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.down.Load() {
		return
	}
	o.down.Store(false)
	o.log.Info(o.what+" available again", "down_for", time.Since(o.since).Round(time.Millisecond).String())
}

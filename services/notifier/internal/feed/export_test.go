package feed

import (
	"context"
	"log/slog"
	"time"
)

// Poller is the poller, driven round by round by the external tests.
type Poller = poller

// NewPoller returns a poller that started at start, with maxQuiet quiet.
func NewPoller(s Store, lookback, sweepWindow, sweepEvery, maxQuiet time.Duration, start time.Time) *Poller {
	p := newPoller(s, lookback, sweepWindow, sweepEvery, position{at: start}, slog.New(slog.DiscardHandler))
	p.maxQuiet = maxQuiet
	return p
}

// Round runs one poll round.
func (p *Poller) Round(ctx context.Context, sink Sink) error { return p.round(ctx, sink) }

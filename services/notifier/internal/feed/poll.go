package feed

import (
	"context"
	"fmt"
	"time"
)

// pageSize is how many results one poll query reads.
const pageSize = 1000

// poller reads new results by (completed_at, _id) every interval.
//
// Workers stamp completed_at before their insert commits, so a result can
// become visible after a later-stamped one was already read. Each round
// therefore reads again from the watermark minus the lookback, and the
// seen set drops what was delivered already: a late result is delivered
// once as long as it commits within the lookback of its own timestamp.
type poller struct {
	store    Store
	interval time.Duration
	lookback time.Duration
	now      func() time.Time
	seen     *seen
	// mark is the latest completion read, capped at the local clock so a
	// worker with a clock running ahead cannot push the window past
	// everybody else's results.
	mark time.Time
}

func newPoller(s Store, interval, lookback time.Duration, start position) *poller {
	return &poller{store: s, interval: interval, lookback: lookback, now: time.Now, seen: newSeen(), mark: start.at}
}

// round reads every result in the window once and hands the new ones to
// sink. It returns how many it delivered.
func (p *poller) round(ctx context.Context, sink Sink) (int, error) {
	from := position{at: p.mark.Add(-p.lookback)}
	delivered := 0
	for {
		rs, err := p.store.After(ctx, from.at, from.id, pageSize)
		if err != nil {
			return delivered, fmt.Errorf("poll results after %s: %w", from.at.Format(time.RFC3339Nano), err)
		}
		if fresh := p.seen.fresh(rs); len(fresh) > 0 {
			sink(ctx, fresh)
			delivered += len(fresh)
		}
		for _, r := range rs {
			if r.CompletedAt.After(p.mark) {
				p.mark = r.CompletedAt
			}
		}
		if len(rs) < pageSize {
			break
		}
		from = positionOf(rs[len(rs)-1])
	}
	if now := p.now(); p.mark.After(now) {
		p.mark = now
	}
	// Nothing before the next window's start can be read again.
	p.seen.prune(p.mark.Add(-p.lookback))
	return delivered, nil
}

// last returns the position to resume from in another mode.
func (p *poller) last() position { return position{at: p.mark} }

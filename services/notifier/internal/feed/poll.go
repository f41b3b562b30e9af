package feed

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jobsys/jobs/pkg/job"
)

// pageSize is how many results one poll query reads.
const pageSize = 1000

// maxQuiet is the longest a poller skips reading because the collection's
// count has not moved. A count can stand still while results come in only
// if as many are deleted meanwhile; such a result is then read this late.
const maxQuiet = 5 * time.Second

// poller reads new results by (stored_at, _id) every interval.
//
// The database stamps stored_at when it executes the insert, a moment
// before the write commits, so a result can become visible after a
// later-stamped one was already read (by milliseconds, or by seconds when
// the database stalls). Each round
// therefore reads again from the watermark minus the lookback, and the
// seen set drops what was delivered already: a late result is delivered
// once as long as it commits within the lookback of its own timestamp.
//
// A result that commits later than that (a database stalled for seconds)
// is found by the sweep: every sweepEvery it counts the results stamped in
// the sweep window before the lookback and, when MongoDB has more than
// were delivered, reads that range again. The seen set covers the sweep
// window, so the sweep never delivers twice either.
//
// On a server that counts the results cheaply (QuickCount: FerretDB, where
// every query reads the whole collection), a round first counts, and when
// the count is what it was when the last read began, and when the last
// sweep began, nothing was committed since that either could have missed:
// the round reads nothing, for up to maxQuiet.
type poller struct {
	store       Store
	lookback    time.Duration
	sweepWindow time.Duration
	sweepEvery  time.Duration
	now         func() time.Time
	log         *slog.Logger
	seen        *seen
	// mark is the latest stamp read, capped at the local clock so a
	// database clock running ahead of this machine's cannot push the
	// window past results still to come.
	mark time.Time
	// floor is where the first window started: nothing before it is
	// anybody's business.
	floor     time.Time
	lastSweep time.Time
	// primed is set once the results stored before the start are marked
	// seen: they are history, for replays to send, not live events.
	primed bool
	// count is the collection's count taken before the last read (-1:
	// none), and readAt when that read began; swept is the count taken
	// before the last sweep.
	count    int64
	swept    int64
	readAt   time.Time
	maxQuiet time.Duration
}

func newPoller(s Store, lookback, sweepWindow, sweepEvery time.Duration, start position, log *slog.Logger) *poller {
	return &poller{
		store: s, lookback: lookback, sweepWindow: sweepWindow, sweepEvery: sweepEvery,
		now: time.Now, log: log, seen: newSeen(), mark: start.at, floor: start.at.Add(-lookback),
		count: -1, swept: -1, maxQuiet: maxQuiet,
	}
}

// round reads every result in the window once and hands the new ones to
// sink, sweeping for late commits when it is time to.
func (p *poller) round(ctx context.Context, sink Sink) error {
	if !p.primed {
		// Everything up to the start position existed before this feed
		// did. Delivering the lookback window before it again would hand
		// clients completions they already have: a client that reconnects
		// after a restart gets its missed completions from its replay, and
		// the replay's de-duplication only knows what the replay sent.
		discard := func(context.Context, []job.Result) {}
		if err := p.read(ctx, position{at: p.mark.Add(-p.lookback)}, p.mark.Add(time.Millisecond), discard, false); err != nil {
			return err
		}
		p.primed = true
	}
	n, counted, err := p.store.QuickCount(ctx)
	if err != nil {
		return fmt.Errorf("count results: %w", err)
	}
	if !counted {
		n = -1
	}
	if n >= 0 && n == p.count && (n == p.swept || p.sweepWindow == 0) && p.now().Sub(p.readAt) < p.maxQuiet {
		return nil // nothing committed since the last read and sweep
	}
	readAt := p.now()
	if err := p.read(ctx, position{at: p.mark.Add(-p.lookback)}, time.Time{}, sink, false); err != nil {
		return err
	}
	if now := p.now(); p.mark.After(now) {
		p.mark = now
	}
	if p.sweepWindow > 0 && p.now().Sub(p.lastSweep) >= p.sweepEvery {
		if err := p.sweep(ctx, sink); err != nil {
			return err
		}
		p.lastSweep, p.swept = p.now(), n
	}
	// Nothing before the sweep window can be read again.
	p.seen.prune(p.mark.Add(-p.lookback - p.sweepWindow))
	// Recorded only now: a round that failed reads again next time.
	p.count, p.readAt = n, readAt
	return nil
}

// read delivers the unseen results from `from` on, up to `to` when it is
// not zero.
func (p *poller) read(ctx context.Context, from position, to time.Time, sink Sink, late bool) error {
	for {
		rs, err := p.store.After(ctx, from.at, from.id, pageSize)
		if err != nil {
			return fmt.Errorf("poll results after %s: %w", from.at.Format(time.RFC3339Nano), err)
		}
		full := len(rs) == pageSize
		if !to.IsZero() {
			for i, r := range rs {
				if !r.StoredAt.Before(to) {
					rs, full = rs[:i], false
					break
				}
			}
		}
		if fresh := p.seen.fresh(rs); len(fresh) > 0 {
			if late {
				for _, r := range fresh {
					p.log.Warn("result became visible later than NOTIFIER_LOOKBACK after its stored_at stamp: delivered late",
						"job_id", r.ID, "stored_at", r.StoredAt, "lookback", p.lookback)
				}
			}
			sink(ctx, fresh)
		}
		for _, r := range rs {
			if r.StoredAt.After(p.mark) {
				p.mark = r.StoredAt
			}
		}
		if !full {
			return nil
		}
		from = positionOf(rs[len(rs)-1])
	}
}

// sweep finds results stamped in the sweep window before the lookback
// that were not delivered: a count first, which is all it costs when
// nothing is missing.
func (p *poller) sweep(ctx context.Context, sink Sink) error {
	to := p.mark.Add(-p.lookback)
	from := to.Add(-p.sweepWindow)
	if from.Before(p.floor) {
		from = p.floor
	}
	if !from.Before(to) {
		return nil
	}
	n, err := p.store.CountBetween(ctx, from, to)
	if err != nil {
		return fmt.Errorf("count results for the late-commit sweep: %w", err)
	}
	if n <= int64(p.seen.between(from, to)) {
		return nil
	}
	return p.read(ctx, position{at: from}, to, sink, true)
}

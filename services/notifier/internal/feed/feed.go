// Package feed finds completed jobs as they are stored and hands each
// batch to the Sink that Run is given, which decides what clients are
// told: from a MongoDB change stream when the server has them (a replica
// set), else by polling an index on (stored_at, _id).
//
// The change stream's resume token is saved in the notifier_state
// collection so a restarted notifier resumes where it stopped; a token
// that fell out of the oplog starts a new stream plus a catch-up query.
// Polling reads a lookback window again each round and drops ids it has
// delivered, so results that commit late are delivered exactly once.
package feed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/store"
)

// Modes the feed runs in, as reported by Mode.
const (
	ModeChangeStream = "changestream"
	ModePoll         = "poll"
	// ModeAuto, in Config.Mode, tries a change stream and polls when the
	// server has none.
	ModeAuto = "auto"
)

// Sink receives each batch of new completions. It must not block.
type Sink func(ctx context.Context, rs []job.Result)

// Store reads stored results in completion order.
type Store interface {
	After(ctx context.Context, at time.Time, id uint64, limit int) ([]job.Result, error)
	Last(ctx context.Context) (job.Result, error)
	CountBetween(ctx context.Context, from, to time.Time) (int64, error)
	QuickCount(ctx context.Context) (n int64, ok bool, err error)
}

var _ Store = (*store.Results)(nil)

// majorityReader is a Store that can read at read concern majority, for
// the catch-up of a change stream (which shows only majority-committed
// writes).
type majorityReader interface {
	Majority() *store.Results
}

var _ majorityReader = (*store.Results)(nil)

// Config configures a Feed.
type Config struct {
	// Mode is auto, changestream or poll.
	Mode         string
	PollInterval time.Duration
	PollLookback time.Duration
	// ID names this instance's saved state.
	ID     string
	Store  Store
	Opener Opener
	State  StateStore
	Logger *slog.Logger
	// OnMode is called when the mode is known, and again when it changes
	// (auto: polling until change streams work, then a change stream).
	OnMode func(mode string)
	// SaveEvery is the longest a resume token that only moved on an idle
	// stream stays unsaved (default 1m); after completions it is saved at
	// once.
	SaveEvery time.Duration
	// ProbeEvery is how often a polling feed in auto mode tries a change
	// stream again (default 1m).
	ProbeEvery time.Duration
	// StateTTL is how long the saved state of another instance may go
	// unsaved before it is removed (default 7 days; negative keeps them).
	StateTTL time.Duration
	// SweepWindow is how long before the lookback the poller still finds
	// results that were stored late (default 30s; negative turns the
	// sweep off). SweepEvery is how often it looks (default 1s).
	SweepWindow time.Duration
	SweepEvery  time.Duration
}

// Feed finds new completions. Run it once.
type Feed struct {
	mode     string
	interval time.Duration
	lookback time.Duration
	id       string
	store    Store
	// catchUp is store read at majority where it can be: what fills a
	// change stream's gap must be as durable as what the stream shows.
	catchUp    Store
	opener     Opener
	state      StateStore
	log        *slog.Logger
	onMode     func(string)
	saveEvery  time.Duration
	probeEvery time.Duration
	stateTTL   time.Duration
	// seen is what was delivered lately, by id, shared by the change
	// stream and the poller so that a switch between them repeats
	// nothing.
	seen       *seen
	sweep      time.Duration
	sweepEvery time.Duration

	modeMu  sync.Mutex
	current atomic.Value // string
	healthy atomic.Bool
	// started is closed once the feed delivers everything that is stored
	// from then on: the stream is open, or the poller has marked what was
	// there before it as history.
	started     chan struct{}
	startedOnce sync.Once
}

// New returns a feed; it does nothing until Run.
func New(c Config) *Feed {
	f := &Feed{
		mode: c.Mode, interval: c.PollInterval, lookback: c.PollLookback, id: c.ID,
		store: c.Store, opener: c.Opener, state: c.State, log: c.Logger, onMode: c.OnMode,
		saveEvery: cmpDuration(c.SaveEvery, time.Minute), probeEvery: cmpDuration(c.ProbeEvery, time.Minute), stateTTL: cmpDuration(c.StateTTL, 7*24*time.Hour),
		seen:  newSeen(),
		sweep: c.SweepWindow, sweepEvery: cmpDuration(c.SweepEvery, time.Second),
	}
	f.catchUp = f.store
	if m, ok := f.store.(majorityReader); ok {
		f.catchUp = m.Majority()
	}
	if c.StateTTL < 0 {
		f.stateTTL = 0 // keep every state
	}
	switch {
	case f.sweep == 0:
		f.sweep = 30 * time.Second
	case f.sweep < 0:
		f.sweep = 0
	}
	if f.interval <= 0 {
		f.interval = 250 * time.Millisecond
	}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	f.current.Store("")
	f.started = make(chan struct{})
	return f
}

// Started is closed once every result stored from then on will be
// delivered. A replay that runs after it and a live subscription together
// miss nothing; one that runs before it could miss what is stored between
// the replay and the feed's start.
func (f *Feed) Started() <-chan struct{} { return f.started }

func (f *Feed) markStarted() { f.startedOnce.Do(func() { close(f.started) }) }

// Mode is "changestream" or "poll" once the feed runs, and "" before.
func (f *Feed) Mode() string { return f.current.Load().(string) }

// Healthy reports whether the last read from MongoDB worked.
func (f *Feed) Healthy() bool { return f.healthy.Load() }

func (f *Feed) setMode(mode string) {
	f.healthy.Store(true)
	f.modeMu.Lock()
	defer f.modeMu.Unlock()
	if f.current.Load().(string) == mode {
		return
	}
	f.current.Store(mode)
	f.log.Info("completion feed running", "mode", mode)
	if f.onMode != nil {
		f.onMode(mode)
	}
}

// Run delivers completions to sink until ctx ends. It returns an error
// only when it cannot run at all: NOTIFIER_MODE=changestream against a
// server without change streams. In auto mode a server without change
// streams is polled, and asked again every ProbeEvery: once a stream
// opens, the feed follows it from where polling stopped.
func (f *Feed) Run(ctx context.Context, sink Sink) error {
	f.expireStates(ctx)
	var from position
	for {
		if f.mode != ModePoll {
			s := &streamer{f: f, seen: f.seen}
			err := s.run(ctx, sink, from)
			if err == nil || ctx.Err() != nil {
				return nil
			}
			if !errors.Is(err, ErrNoChangeStreams) || f.mode == ModeChangeStream {
				return fmt.Errorf("change stream feed: %w", err)
			}
			f.log.Info("the MongoDB server has no change streams: polling",
				"answer", strings.TrimPrefix(err.Error(), ErrNoChangeStreams.Error()+": "))
			from = s.last
		}
		if from.at.IsZero() {
			var ok bool
			if from, ok = f.latest(ctx); !ok {
				return nil
			}
		}
		next, switched := f.poll(ctx, sink, from)
		if !switched {
			return nil
		}
		f.log.Info("change streams answer now: switching from polling", "cursor", next.cursor())
		from = next
	}
}

func (f *Feed) latest(ctx context.Context) (position, bool) {
	for attempt := 0; ; attempt++ {
		r, err := f.store.Last(ctx)
		if errors.Is(err, store.ErrNotFound) {
			return position{at: time.Now()}, true
		}
		if err == nil {
			return positionOf(r), true
		}
		f.healthy.Store(false)
		f.log.Warn("read the newest result", "err", err, "attempt", attempt)
		if !sleep(ctx, backoff(attempt)) {
			return position{}, false
		}
	}
}

// poll polls until ctx ends, or in auto mode until a change stream
// opens (switched), and returns where it stopped.
func (f *Feed) poll(ctx context.Context, sink Sink, start position) (last position, switched bool) {
	p := newPoller(f.store, f.lookback, f.sweep, f.sweepEvery, start, f.log)
	p.seen = f.seen
	f.setMode(ModePoll)
	failing := false
	probe := time.Now().Add(f.probeEvery)
	for {
		began := time.Now()
		err := p.round(ctx, sink)
		took := time.Since(began)
		if err == nil {
			f.markStarted()
		}
		switch {
		case ctx.Err() != nil:
			return position{}, false
		case err != nil && !failing:
			f.log.Warn("poll failed; retrying every interval", "err", err)
			failing = true
		case err == nil && failing:
			f.log.Info("poll works again")
			failing = false
		}
		f.healthy.Store(err == nil)
		if f.mode == ModeAuto && f.opener != nil && time.Now().After(probe) {
			probe = time.Now().Add(f.probeEvery)
			if f.changeStreamsAnswer(ctx) {
				return position{at: p.mark}, true
			}
		}
		if !sleep(ctx, pollPause(f.interval, took)) {
			return position{}, false
		}
	}
}

// changeStreamsAnswer opens a change stream and closes it again: whether
// the server has change streams now.
func (f *Feed) changeStreamsAnswer(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cs, err := f.opener.Open(ctx, nil)
	if err != nil {
		return false
	}
	_ = cs.Close(ctx)
	return true
}

func pollPause(interval, took time.Duration) time.Duration {
	return max(interval-took, took)
}

// backoff is the pause before retry number attempt: 100ms doubling to
// 5s, with jitter.
func backoff(attempt int) time.Duration {
	d := 100 * time.Millisecond << min(attempt, 6)
	d = min(d, 5*time.Second)
	return d/2 + rand.N(d/2+1)
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

package tracker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/pkg/job"
	"github.com/jobsys/jobs/pkg/queue"
	"github.com/jobsys/jobs/pkg/testenv"
	"github.com/jobsys/jobs/services/notifier/internal/tracker"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// hub records what the tracker tells it; the watched ids are set by the
// test, and subscribe hands ids over as the real hub does.
type hub struct {
	mu         sync.Mutex
	watched    []uint64
	subscribed []uint64
	kick       chan struct{}
	states     map[uint64][]job.State
	unknown    map[uint64][]string
	forgotten  []uint64
	stats      []map[string]job.TubeStats
	frames     []job.Event
	noStats    bool // no client listens to stats
	statsHook  func(completed int)
	completed  int // completions published
}

func newHub(ids ...uint64) *hub {
	return &hub{watched: slices.Clone(ids), states: map[uint64][]job.State{}, unknown: map[uint64][]string{}, kick: make(chan struct{}, 1)}
}

// subscribe watches ids and hands them to the tracker.
func (h *hub) subscribe(ids ...uint64) {
	h.mu.Lock()
	for _, id := range ids {
		if !slices.Contains(h.watched, id) {
			h.watched = append(h.watched, id)
		}
	}
	slices.Sort(h.watched)
	h.subscribed = append(h.subscribed, ids...)
	h.mu.Unlock()
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

func (h *hub) Subscribed() <-chan struct{} { return h.kick }

func (h *hub) TakeSubscribed() []uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	ids := h.subscribed
	h.subscribed = nil
	return ids
}

func (h *hub) Watched() []uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.watched)
}

func (h *hub) Waiting(ids []uint64) []uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []uint64
	for _, id := range ids {
		if slices.Contains(h.watched, id) {
			out = append(out, id)
		}
	}
	return out
}

func (h *hub) JobState(ev job.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.states[ev.ID] = append(h.states[ev.ID], ev.State)
	if ev.State == job.StateCompleted {
		h.watched = slices.DeleteFunc(h.watched, func(x uint64) bool { return x == ev.ID })
	}
}

func (h *hub) Unknown(id uint64, why string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.unknown[id] = append(h.unknown[id], why)
}

func (h *hub) Forget(id uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.forgotten = append(h.forgotten, id)
	h.watched = slices.DeleteFunc(h.watched, func(x uint64) bool { return x == id })
}

func (h *hub) Completed(_ context.Context, rs []job.Result) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.completed += len(rs)
	for _, r := range rs {
		h.watched = slices.DeleteFunc(h.watched, func(x uint64) bool { return x == r.ID })
	}
}

func (h *hub) CompletedTotal() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return int64(h.completed)
}

func (h *hub) StatsWanted() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return !h.noStats
}

func (h *hub) Stats(tubes map[string]job.TubeStats, totals job.TubeStats, count, completed int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.statsHook != nil {
		h.statsHook(completed)
	}
	h.stats = append(h.stats, tubes)
	h.frames = append(h.frames, job.Event{Type: job.TypeStats, Tubes: tubes, Totals: &totals, TubeCount: &count})
}

// setStatsWanted says whether a client listens to the stats.
func (h *hub) setStatsWanted(on bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.noStats = !on
}

// statsFrames returns the stats sent so far.
func (h *hub) statsFrames() []job.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.frames)
}

func (h *hub) statesOf(id uint64) []job.State {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.states[id])
}

func run(t *testing.T, tr *tracker.Tracker) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = tr.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// A subscribe is answered with the job's state in the queue, sent even
// when the tracker knew it already (the hub sends it to the watchers that
// have not had it); a job gone from the queue with a stored result, after
// StoreDelay, with its completion; one that exists nowhere with "not
// found", once, staying watched.
func TestSubscribesAreAnswered(t *testing.T) {
	t.Parallel()
	b := testenv.SetupClients(t)
	ctx := context.Background()
	delayed, err := b.Queue.Put(ctx, []byte(`{"a":1}`), queue.PutOptions{Tube: b.Tube, Delay: time.Hour})
	require.NoError(t, err)
	stored := putJobs(t, b, 1, `{"b":2}`)[0]
	require.NoError(t, b.Queue.Delete(ctx, stored))
	require.NoError(t, b.Store.Save(ctx, job.Result{ID: stored, Hash: job.Hash(`{"b":2}`), Payload: `{"b":2}`, CompletedAt: time.Now()}))
	nowhere := stored + 1_000_000

	h := newHub()
	const delay = 300 * time.Millisecond
	run(t, tracker.New(tracker.Config{Queue: b.Queue, Results: b.Store, Hub: h, Interval: time.Hour, StoreDelay: delay}))
	start := time.Now()
	h.subscribe(delayed, stored, nowhere)
	require.Eventually(t, func() bool { return len(h.statesOf(delayed)) == 1 }, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, []job.State{job.StateDelayed}, h.statesOf(delayed))
	require.Less(t, time.Since(start), delay, "the queue's answer does not wait for the store")
	h.subscribe(delayed) // a second watcher
	require.Eventually(t, func() bool { return len(h.statesOf(delayed)) == 2 }, 5*time.Second, 5*time.Millisecond)

	require.Eventually(t, func() bool { return len(h.statesOf(stored)) == 1 }, 5*time.Second, 5*time.Millisecond)
	require.GreaterOrEqual(t, time.Since(start), delay)
	require.Equal(t, []job.State{job.StateCompleted}, h.statesOf(stored))
	require.Eventually(t, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.unknown[nowhere]) > 0
	}, 5*time.Second, 5*time.Millisecond)
	h.mu.Lock()
	require.Equal(t, []string{fmt.Sprintf("job %d not found", nowhere)}, h.unknown[nowhere])
	require.Contains(t, h.watched, nowhere)
	require.Empty(t, h.unknown[delayed])
	h.mu.Unlock()
}

// The completions the hub published are counted in the next stats
// frame, and only there.
func TestCompletionsAreCountedInTheNextStats(t *testing.T) {
	t.Parallel()
	b := testenv.SetupClients(t)
	h := newHub()
	tr := tracker.New(tracker.Config{Queue: b.Queue, Results: b.Store, Hub: h, Interval: 50 * time.Millisecond})
	var got []int
	h.statsHook = func(n int) {
		got = append(got, n)
		if len(got) == 1 {
			h.completed += 3 // the feed's completions, as the hub counts them
		}
	}
	run(t, tr)
	require.Eventually(t, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(got) >= 3
	}, 5*time.Second, 5*time.Millisecond)
	h.mu.Lock()
	defer h.mu.Unlock()
	require.Equal(t, 3, got[1], "the next frame counts them")
	require.Zero(t, got[2], "and the one after does not again")
}

func TestChangesAreReportedOnceInBoundedRounds(t *testing.T) {
	t.Parallel()
	b := testenv.SetupClients(t)
	ctx := context.Background()
	// More watched jobs than one round asks about.
	ids := putJobs(t, b, 25, `{}`)
	h := newHub(ids...)
	run(t, tracker.New(tracker.Config{Queue: b.Queue, Results: b.Store, Hub: h, Interval: 50 * time.Millisecond, Batch: 10}))
	require.Eventually(t, func() bool {
		for _, id := range ids {
			if len(h.statesOf(id)) == 0 {
				return false
			}
		}
		return true
	}, 5*time.Second, 10*time.Millisecond, "every watched job gets its turn")

	// Bury one: a change, reported once more.
	cons := queue.NewConsumer(b.Beanstalk.Addr(), []string{b.Tube}, 2*time.Second)
	t.Cleanup(func() { cons.Close() })
	r, err := cons.Reserve(ctx, 5*time.Second)
	require.NoError(t, err)
	require.NoError(t, cons.Bury(ctx, r.ID, 0))
	require.Eventually(t, func() bool {
		s := h.statesOf(r.ID)
		return len(s) > 0 && s[len(s)-1] == job.StateBuried
	}, 5*time.Second, 10*time.Millisecond)
	time.Sleep(300 * time.Millisecond) // rounds go on without news
	for _, id := range ids {
		s := h.statesOf(id)
		if id == r.ID {
			require.Contains(t, [][]job.State{{job.StateReady, job.StateBuried}, {job.StateReady, job.StateReserved, job.StateBuried}}, s)
			continue
		}
		require.Equal(t, []job.State{job.StateReady}, s, "job %d", id)
	}
	h.mu.Lock()
	require.NotEmpty(t, h.stats)
	require.EqualValues(t, 24, h.stats[len(h.stats)-1][b.Tube].Ready)
	h.mu.Unlock()
}

func TestAJobThatExistsNowhereIsForgottenAfterTheGrace(t *testing.T) {
	t.Parallel()
	b := testenv.SetupClients(t)
	h := newHub(999_999_999)
	run(t, tracker.New(tracker.Config{Queue: b.Queue, Results: b.Store, Hub: h, Interval: 20 * time.Millisecond, Grace: 200 * time.Millisecond, StoreDelay: 50 * time.Millisecond}))
	start := time.Now()
	require.Eventually(t, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.forgotten) == 1
	}, 5*time.Second, 10*time.Millisecond)
	require.GreaterOrEqual(t, time.Since(start), 200*time.Millisecond)
	require.Empty(t, h.statesOf(999_999_999))
}

// countingResults counts the store lookups: the ids asked about, and
// how many each query asked about.
type countingResults struct {
	tracker.Results
	mu      sync.Mutex
	finds   map[uint64]int
	queries []int
}

func (c *countingResults) FindMany(ctx context.Context, ids []uint64) (map[uint64]job.Result, error) {
	c.mu.Lock()
	for _, id := range ids {
		c.finds[id]++
	}
	c.queries = append(c.queries, len(ids))
	c.mu.Unlock()
	return c.Results.FindMany(ctx, ids)
}

// total returns how many ids were asked about, and the size of each query.
func (c *countingResults) total() (ids int, queries []int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range c.finds {
		ids += k
	}
	return ids, slices.Clone(c.queries)
}

// A watched job that leaves the queue completed is not looked up in the
// store at once (the feed delivers its completion; on FerretDB a lookup
// reads the whole table): only after StoreDelay, at most StoreBatch jobs
// per query, those due together in one. Then the completion is reported
// once.
func TestStoreLookupsWaitAndAreBounded(t *testing.T) {
	t.Parallel()
	b := testenv.SetupClients(t)
	ctx := context.Background()
	ids := putJobs(t, b, 30, `{"n":1}`)
	h := newHub(ids...)
	rs := &countingResults{Results: b.Store, finds: map[uint64]int{}}
	run(t, tracker.New(tracker.Config{Queue: b.Queue, Results: rs, Hub: h, Interval: 200 * time.Millisecond,
		Batch: 100, StoreDelay: time.Second, StoreBatch: 12}))
	require.Eventually(t, func() bool { return len(h.statesOf(ids[29])) == 1 }, 5*time.Second, 10*time.Millisecond)

	// A worker's way: store every result, then delete the job. The
	// deletes come last and together, so that at most two rounds see the
	// jobs leave.
	cons := queue.NewConsumer(b.Beanstalk.Addr(), []string{b.Tube}, 2*time.Second)
	t.Cleanup(func() { cons.Close() })
	var reserved []uint64
	for range ids {
		r, err := cons.Reserve(ctx, 5*time.Second)
		require.NoError(t, err)
		res := job.Result{ID: r.ID, Hash: job.Hash(string(r.Body)), Payload: string(r.Body), Tube: b.Tube, Attempts: 1}
		require.NoError(t, b.Store.Save(ctx, res))
		reserved = append(reserved, r.ID)
	}
	for _, id := range reserved {
		require.NoError(t, cons.Delete(ctx, id))
	}

	time.Sleep(600 * time.Millisecond) // three rounds, before StoreDelay
	n, q := rs.total()
	require.Zero(t, n, "the store was asked before StoreDelay")

	require.Eventually(t, func() bool {
		for _, id := range ids {
			if s := h.statesOf(id); len(s) == 0 || s[len(s)-1] != job.StateCompleted {
				return false
			}
		}
		return true
	}, 10*time.Second, 10*time.Millisecond)
	time.Sleep(400 * time.Millisecond)
	for _, id := range ids {
		// Ready, then completed once; a round that ran while the job was
		// reserved (on a busy machine the reserve loop outlasts a round)
		// may show reserved in between.
		states := h.statesOf(id)
		if len(states) == 3 {
			require.Equal(t, job.StateReserved, states[1], "job %d: %v", id, states)
			states = []job.State{states[0], states[2]}
		}
		require.Equal(t, []job.State{job.StateReady, job.StateCompleted}, states, "job %d", id)
	}
	n, q = rs.total()
	require.Equal(t, 30, n, "one lookup per job")
	// A query asks about at most 12 jobs; 30 jobs gone in at most two
	// rounds fill at least one query.
	require.Contains(t, q, 12, "queries %v", q)
	for _, k := range q {
		require.LessOrEqual(t, k, 12, "queries %v", q)
	}
	require.Less(t, len(q), 30, "not one query per job: %v", q)
}

// putJobs puts n jobs with body into the test's tube and returns their ids.
func putJobs(t *testing.T, b testenv.Clients, n int, body string) []uint64 {
	t.Helper()
	ids := make([]uint64, 0, n)
	for range n {
		id, err := b.Queue.Put(context.Background(), []byte(body), queue.PutOptions{Tube: b.Tube, TTR: time.Minute})
		require.NoError(t, err)
		ids = append(ids, id)
	}
	return ids
}

// commands returns beanstalkd's counters of the commands the stats use.
func commands(t *testing.T, p *queue.Pool) (stats, statsTube, listTubes int) {
	t.Helper()
	m, err := p.ServerStats(testenv.Context(t, 5*time.Second))
	require.NoError(t, err)
	n := func(k string) int {
		v, err := strconv.Atoi(m[k])
		require.NoError(t, err, k)
		return v
	}
	return n("cmd-stats"), n("cmd-stats-tube"), n("cmd-list-tubes")
}

// Many tubes, past StatsTubes: a round asks about at most 2×StatsTubes of
// them, a frame lists at most StatsTubes (the busiest first in), the
// totals count every job, and with nobody listening beanstalkd is not
// asked at all. On a beanstalkd of the test's own, so the counters are
// the tracker's.
func TestStatsCostIsBoundedWhateverTheNumberOfTubes(t *testing.T) {
	t.Parallel()
	const tubes, shown = 600, 20
	bs := testenv.StartBeanstalkd(t, testenv.BeanstalkdOptions{})
	p := queue.NewPool(queue.PoolConfig{Addr: bs.Addr()})
	t.Cleanup(func() { _ = p.Close() })
	ctx := testenv.Context(t, time.Minute)
	for i := range tubes {
		_, err := p.Put(ctx, []byte("{}"), queue.PutOptions{Tube: fmt.Sprintf("idle-%03d", i), TTR: time.Minute})
		require.NoError(t, err)
	}
	for range 30 {
		_, err := p.Put(ctx, []byte("{}"), queue.PutOptions{Tube: "zz-busy", TTR: time.Minute})
		require.NoError(t, err)
	}

	h := newHub()
	h.setStatsWanted(false)
	run(t, tracker.New(tracker.Config{Queue: p, Hub: h, Interval: 50 * time.Millisecond, StatsTubes: shown, ListEvery: 200 * time.Millisecond}))
	s0, st0, l0 := commands(t, p)
	time.Sleep(500 * time.Millisecond) // ten rounds with nobody listening
	s1, st1, l1 := commands(t, p)
	require.Equal(t, 1, s1-s0, "no stats asked with nobody listening (the one is this test's)")
	require.Zero(t, st1-st0, "no stats-tube with nobody listening")
	require.Zero(t, l1-l0, "no list-tubes with nobody listening")
	require.Empty(t, h.statsFrames())

	h.setStatsWanted(true)
	// A tube outside the frame is looked at within tubes/shown rounds:
	// zz-busy comes last in turn.
	require.Eventually(t, func() bool {
		fs := h.statsFrames()
		return len(fs) > 0 && fs[len(fs)-1].Tubes["zz-busy"].Ready == 30
	}, 20*time.Second, 20*time.Millisecond, "the busy tube is found and listed")
	h.setStatsWanted(false)
	time.Sleep(200 * time.Millisecond) // the round in flight ends
	s2, st2, l2 := commands(t, p)
	frames := h.statsFrames()
	rounds := len(frames)
	t.Logf("%d rounds: %d stats, %d stats-tube, %d list-tubes for %d tubes", rounds, s2-s1-1, st2-st1, l2-l1, tubes+2)
	require.LessOrEqual(t, st2-st1, rounds*2*shown, "at most 2×StatsTubes stats-tube a round")
	require.LessOrEqual(t, s2-s1-1, rounds, "one stats a round")
	require.Less(t, l2-l1, rounds, "list-tubes less often than every round")

	last := frames[len(frames)-1]
	require.LessOrEqual(t, len(last.Tubes), shown)
	require.Equal(t, tubes+2, *last.TubeCount, "idle-*, zz-busy and default")
	require.EqualValues(t, tubes+30, last.Totals.Ready, "the totals count every tube")
	b, err := json.Marshal(last)
	require.NoError(t, err)
	require.Less(t, len(b), shown*120+200, "a frame's size is bounded by StatsTubes: %d bytes", len(b))
}

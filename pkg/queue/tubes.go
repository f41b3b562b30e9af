package queue

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/beanstalkd/go-beanstalk"

	"github.com/jobsys/jobs/pkg/job"
)

// TubeInfo is beanstalkd's stats-tube answer with its keys in camelCase,
// as GET /N/ names stats-job's.
type TubeInfo struct {
	Name                string `json:"name"`
	CurrentJobsUrgent   uint64 `json:"currentJobsUrgent"`
	CurrentJobsReady    uint64 `json:"currentJobsReady"`
	CurrentJobsReserved uint64 `json:"currentJobsReserved"`
	CurrentJobsDelayed  uint64 `json:"currentJobsDelayed"`
	CurrentJobsBuried   uint64 `json:"currentJobsBuried"`
	TotalJobs           uint64 `json:"totalJobs"`
	CurrentUsing        uint64 `json:"currentUsing"`
	CurrentWatching     uint64 `json:"currentWatching"`
	CurrentWaiting      uint64 `json:"currentWaiting"`
	CmdDelete           uint64 `json:"cmdDelete"`
	CmdPauseTube        uint64 `json:"cmdPauseTube"`
	// Pause is the length of the current pause in seconds (0: not paused);
	// PauseTimeLeft is what remains of it.
	Pause         uint64 `json:"pause"`
	PauseTimeLeft uint64 `json:"pauseTimeLeft"`
}

// Counts is the tube's job counts and watchers, as job.TubeStats.
func (t TubeInfo) Counts() job.TubeStats {
	return job.TubeStats{Ready: t.CurrentJobsReady, Reserved: t.CurrentJobsReserved, Delayed: t.CurrentJobsDelayed,
		Buried: t.CurrentJobsBuried, Watching: t.CurrentWatching}
}

// tubeInfo reads a stats-tube answer, or the same counters of a server
// stats answer; a missing or odd number is 0.
func tubeInfo(m map[string]string) TubeInfo {
	t := TubeInfo{Name: m["name"]}
	_ = readUints(m, map[string]*uint64{
		"current-jobs-urgent": &t.CurrentJobsUrgent, "current-jobs-ready": &t.CurrentJobsReady,
		"current-jobs-reserved": &t.CurrentJobsReserved, "current-jobs-delayed": &t.CurrentJobsDelayed,
		"current-jobs-buried": &t.CurrentJobsBuried, "total-jobs": &t.TotalJobs,
		"current-using": &t.CurrentUsing, "current-watching": &t.CurrentWatching,
		"current-waiting": &t.CurrentWaiting, "cmd-delete": &t.CmdDelete,
		"cmd-pause-tube": &t.CmdPauseTube, "pause": &t.Pause, "pause-time-left": &t.PauseTimeLeft,
	})
	return t
}

// readUints parses the number under each key of m into its field (0 when
// missing or malformed) and returns an error naming every such key.
func readUints(m map[string]string, fields map[string]*uint64) error {
	var errs []error
	for _, key := range slices.Sorted(maps.Keys(fields)) {
		v, ok := m[key]
		n, err := strconv.ParseUint(v, 10, 64)
		if !ok || err != nil {
			errs = append(errs, fmt.Errorf("field %q = %q", key, v))
		}
		*fields[key] = n
	}
	return errors.Join(errs...)
}

// TubeNames returns the names of the tubes beanstalkd has (list-tubes),
// sorted.
func (p *Pool) TubeNames(ctx context.Context) ([]string, error) {
	names, err := ask(ctx, p.with, "list-tubes", (*beanstalk.Conn).ListTubes)
	slices.Sort(names)
	return names, err
}

// TubeInfos returns the stats-tube of each named tube, in the order
// given, on one connection; a tube that does not exist (any more) is
// left out.
func (p *Pool) TubeInfos(ctx context.Context, names []string) ([]TubeInfo, error) {
	return ask(ctx, p.with, "stats-tube", func(bc *beanstalk.Conn) ([]TubeInfo, error) {
		out := make([]TubeInfo, 0, len(names))
		for _, name := range names {
			m, err := beanstalk.NewTube(bc, name).Stats()
			if errors.Is(err, beanstalk.ErrNotFound) {
				continue // the tube went away, or never was
			}
			if err != nil {
				return nil, err
			}
			out = append(out, tubeInfo(m))
		}
		return out, nil
	})
}

// TubeStats returns the job counts of the named tubes, by name, as
// TubeInfos finds them.
func (p *Pool) TubeStats(ctx context.Context, names []string) (map[string]job.TubeStats, error) {
	infos, err := p.TubeInfos(ctx, names)
	out := make(map[string]job.TubeStats, len(infos))
	for _, t := range infos {
		out[t.Name] = t.Counts()
	}
	return out, err
}

// Tubes returns the job counts of every tube beanstalkd has, by name.
func (p *Pool) Tubes(ctx context.Context) (map[string]job.TubeStats, error) {
	names, err := p.TubeNames(ctx)
	if err != nil {
		return nil, err
	}
	return p.TubeStats(ctx, names)
}

// Tube returns the named tube's stats-tube; ErrNotFound when beanstalkd
// has no such tube (it has one while a job or a client uses it).
func (p *Pool) Tube(ctx context.Context, name string) (TubeInfo, error) {
	m, err := onTube(ctx, p, "stats-tube", name, (*beanstalk.Tube).Stats)
	return tubeInfo(m), err
}

// onTube checks the tube's name and runs f on it as ask does.
func onTube[T any](ctx context.Context, p *Pool, op, tube string, f func(t *beanstalk.Tube) (T, error)) (T, error) {
	if err := ValidateTube(tube); err != nil {
		var zero T
		return zero, err
	}
	return ask(ctx, p.with, op, func(bc *beanstalk.Conn) (T, error) { return f(beanstalk.NewTube(bc, tube)) })
}

// Totals returns the job counts over every tube and the number of tubes,
// from one server stats command, whatever the number of tubes. Watching
// is the number of worker connections (current-workers).
func (p *Pool) Totals(ctx context.Context) (totals job.TubeStats, tubes int, err error) {
	m, err := p.ServerStats(ctx)
	if err != nil {
		return job.TubeStats{}, 0, err
	}
	n, err := strconv.Atoi(m["current-tubes"])
	if err != nil {
		return job.TubeStats{}, 0, fmt.Errorf("stats: current-tubes %q: %w", m["current-tubes"], err)
	}
	totals = tubeInfo(m).Counts()
	totals.Watching, _ = strconv.ParseUint(m["current-workers"], 10, 64)
	return totals, n, nil
}

// MaxPause is the longest pause PauseTube takes: beanstalkd keeps the
// delay in nanoseconds, and a day is more than any operator means.
const MaxPause = 7 * 24 * time.Hour

// PauseTube stops reservations from tube for d (whole seconds); 0
// resumes it at once.
func (p *Pool) PauseTube(ctx context.Context, tube string, d time.Duration) error {
	if d < 0 || d > MaxPause {
		return fmt.Errorf("pause %s: must be from 0 to %s", d, MaxPause)
	}
	_, err := onTube(ctx, p, "pause-tube", tube, func(t *beanstalk.Tube) (struct{}, error) { return struct{}{}, t.Pause(d) })
	return err
}

// KickTube moves up to bound jobs of tube to ready: buried ones when it
// has any, else delayed ones (beanstalkd's kick). It returns how many
// moved. Kick moves one job.
func (p *Pool) KickTube(ctx context.Context, tube string, bound int) (int, error) {
	return onTube(ctx, p, "kick", tube, func(t *beanstalk.Tube) (int, error) { return t.Kick(bound) })
}

// Peeked is a job copied by a peek command: its id and body.
type Peeked struct {
	ID   uint64
	Body []byte
}

// Peek copies job id; ErrNotFound when beanstalkd does not hold it.
func (p *Pool) Peek(ctx context.Context, id uint64) ([]byte, error) {
	return ask(ctx, p.with, "peek", func(bc *beanstalk.Conn) ([]byte, error) { return bc.Peek(id) })
}

// peeks are the peek commands by the state of the job they copy.
var peeks = map[string]func(*beanstalk.Tube) (uint64, []byte, error){
	"ready": (*beanstalk.Tube).PeekReady, "delayed": (*beanstalk.Tube).PeekDelayed, "buried": (*beanstalk.Tube).PeekBuried,
}

// PeekNext copies the next job of tube in state "ready" (peek-ready: the
// one a worker gets next), "delayed" (peek-delayed: the next to become
// ready) or "buried" (peek-buried: the next a kick moves); ErrNotFound
// when there is none.
func (p *Pool) PeekNext(ctx context.Context, tube, state string) (Peeked, error) {
	peek, ok := peeks[state]
	if !ok {
		return Peeked{}, fmt.Errorf("peek: no peek for state %q", state)
	}
	return onTube(ctx, p, "peek-"+state, tube, func(t *beanstalk.Tube) (pk Peeked, err error) {
		pk.ID, pk.Body, err = peek(t)
		return pk, err
	})
}

// errBadStats: a stats-job answer without a field, or with one that
// does not parse.
var errBadStats = errors.New("bad stats-job answer")

// jobStats reads a stats-job answer; every numeric field must be there
// and parse.
func jobStats(m map[string]string) (job.Stats, error) {
	s := job.Stats{Tube: m["tube"], State: job.State(m["state"])}
	var pri uint64
	err := readUints(m, map[string]*uint64{
		"id": &s.ID, "pri": &pri, "age": &s.Age, "delay": &s.Delay, "ttr": &s.TTR,
		"time-left": &s.TimeLeft, "file": &s.File, "reserves": &s.Reserves, "timeouts": &s.Timeouts,
		"releases": &s.Releases, "buries": &s.Buries, "kicks": &s.Kicks,
	})
	s.Pri = uint32(pri)
	if err != nil {
		return s, fmt.Errorf("%w: %w", errBadStats, err)
	}
	return s, nil
}

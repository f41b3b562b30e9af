package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/jobsys/jobs/pkg/job"
)

// maxPipelined is the most commands one connection carries in one write.
const maxPipelined = 64

// pipeReq is one Put or StatsJob waiting for a connection.
type pipeReq struct {
	statsJob bool // a stats-job of id; otherwise a put of tube, body and o
	id       uint64
	tube     string
	body     []byte
	o        PutOptions
	// taken is set, under the pipeline's lock, when a sender took the
	// request: from then on it goes out even if its caller gave up.
	taken bool
	done  chan pipeRes // buffered: a sender never waits for the caller
}

// op names the request's command in errors.
func (r *pipeReq) op() string {
	if r.statsJob {
		return "stats-job"
	}
	return "put"
}

type pipeRes struct {
	id    uint64 // a put's new job
	stats job.Stats
	err   error
}

// pipeline combines concurrent puts and stats-jobs, the manager's two
// busy commands. A caller queues its request; whoever gets one of the
// sender slots takes every request queued at that moment, writes them on
// one pooled connection in one write, and reads their answers in order
// (beanstalkd answers in order). Under load that is one write and one
// read for many requests instead of one each, on our side and
// beanstalkd's: on loopback a write costs the sender the receiver's
// network stack too, and in a profile of lookups one by one the
// stats-job writes were 31% of the manager's CPU. With one caller at a
// time it is a plain command.
type pipeline struct {
	senders chan struct{} // one slot per sending connection

	mu      sync.Mutex
	pending []*pipeReq
}

func newPipeline(senders int) *pipeline {
	return &pipeline{senders: make(chan struct{}, senders)}
}

// pipelined runs r on the pool through the pipeline.
func (p *Pool) pipelined(ctx context.Context, r *pipeReq) pipeRes {
	pl := p.pipeline
	pl.mu.Lock()
	pl.pending = append(pl.pending, r)
	pl.mu.Unlock()
	for {
		select {
		case res := <-r.done:
			return res
		case pl.senders <- struct{}{}:
			if batch := pl.take(); len(batch) > 0 {
				p.send(ctx, batch)
			}
			<-pl.senders
			if pl.isTaken(r) {
				// Sent, by this caller or another: only the answer is
				// left to wait for (it comes within the command timeout),
				// not another turn at sending.
				return <-r.done
			}
		case <-ctx.Done():
			if pl.withdraw(r) {
				return pipeRes{err: fmt.Errorf("%s: %w", r.op(), ctx.Err())}
			}
			// Already on its way: its answer comes within the command
			// timeout.
			return <-r.done
		}
	}
}

// take removes and returns up to maxPipelined queued requests, oldest
// first.
func (pl *pipeline) take() []*pipeReq {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	n := min(len(pl.pending), maxPipelined)
	batch := make([]*pipeReq, n)
	copy(batch, pl.pending)
	for _, r := range batch {
		r.taken = true
	}
	rest := copy(pl.pending, pl.pending[n:])
	clear(pl.pending[rest:]) // no stale pointers behind the queue
	pl.pending = pl.pending[:rest]
	return batch
}

func (pl *pipeline) isTaken(r *pipeReq) bool {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	return r.taken
}

// withdraw removes r from the queue unless a sender took it already.
func (pl *pipeline) withdraw(r *pipeReq) bool {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if r.taken {
		return false
	}
	if i := slices.Index(pl.pending, r); i >= 0 {
		pl.pending = slices.Delete(pl.pending, i, i+1)
	}
	return true
}

// send writes batch on one connection and answers every request in it.
// The batch runs under the pool's command timeout, not under the context
// of the caller that happens to send it: the others' requests must not
// fail because that caller went away.
func (p *Pool) send(ctx context.Context, batch []*pipeReq) {
	answered := 0
	err := p.with(context.WithoutCancel(ctx), batchOp(batch), func(c *client) error {
		return c.pipelineBatch(batch, &answered)
	})
	for _, r := range batch[answered:] {
		if err == nil {
			err = fmt.Errorf("%s: no answer from beanstalkd", r.op())
		}
		r.done <- pipeRes{err: err}
	}
}

// batchOp names a batch in errors: "put", "stats-job" or both.
func batchOp(batch []*pipeReq) string {
	op := batch[0].op()
	for _, r := range batch[1:] {
		if r.op() != op {
			return "put and stats-job"
		}
	}
	return op
}

// pipelineBatch writes the commands of batch and reads their answers,
// setting answered to how many requests it has answered. An error it
// returns is the connection's (I/O, or an answer out of step); a command
// that beanstalkd refuses (a put too big, a stats-job of an unknown job)
// is answered with its own error and the connection stays.
func (c *client) pipelineBatch(batch []*pipeReq, answered *int) error {
	// The requests of a batch are concurrent, so their order is free:
	// puts grouped by tube, the connection's current tube first (with the
	// stats-jobs, which need no tube), need one use per tube instead of
	// one per switch.
	tubeOf := func(r *pipeReq) string {
		if r.statsJob {
			return c.used
		}
		return r.tube
	}
	slices.SortStableFunc(batch, func(a, b *pipeReq) int {
		ta, tb := tubeOf(a), tubeOf(b)
		switch {
		case ta == tb:
			return 0
		case ta == c.used:
			return -1
		case tb == c.used:
			return 1
		}
		return strings.Compare(ta, tb)
	})
	useFirst := make([]bool, len(batch))
	for i, r := range batch {
		if r.statsJob {
			c.cmd("stats-job", r.id)
			continue
		}
		if r.tube != c.used {
			c.cmdTube("use", r.tube)
			c.used = r.tube
			useFirst[i] = true
		}
		c.put(r.body, r.o)
	}
	if err := c.w.Flush(); err != nil {
		c.used = "" // unknown: the connection is dropped anyway
		return err
	}
	for i, r := range batch {
		var res pipeRes
		if r.statsJob {
			res.stats, res.err = c.jobStats()
		} else {
			if useFirst[i] {
				tube, err := c.expect("use", "USING")
				if err == nil && tube != r.tube {
					err = fmt.Errorf("%w: use %s answered USING %s", errOutOfStep, r.tube, tube)
				}
				if err != nil {
					// The put that follows went to another tube, or the
					// answers no longer match the commands: the
					// connection is dropped and the rest of the batch
					// fails.
					return unread(err)
				}
			}
			if res.id, res.err = c.putAnswer(); res.err != nil {
				res.id = 0
			}
		}
		if res.err != nil {
			if !keepsConn(res.err) {
				return res.err
			}
			res.err = fmt.Errorf("%s: %w", r.op(), res.err)
		}
		r.done <- res
		*answered++
	}
	return nil
}

// errBadStats: a stats-job answer that does not parse. The answer was
// read whole, so the connection stays.
var errBadStats = errors.New("bad stats-job answer")

// parseJobStats reads the YAML dictionary of a stats-job answer ("---"
// and "key: value" lines) straight into job.Stats; every numeric field
// must be there and parse.
func parseJobStats(data []byte) (job.Stats, error) {
	var s job.Stats
	var pri uint64
	nums := [...]struct {
		key string
		dst *uint64
	}{
		{"id", &s.ID}, {"pri", &pri}, {"age", &s.Age}, {"delay", &s.Delay}, {"ttr", &s.TTR},
		{"time-left", &s.TimeLeft}, {"file", &s.File}, {"reserves", &s.Reserves}, {"timeouts", &s.Timeouts},
		{"releases", &s.Releases}, {"buries", &s.Buries}, {"kicks", &s.Kicks},
	}
	var seen [len(nums)]bool
	var errs []error
	rest := bytes.TrimPrefix(data, []byte("---\n"))
	for len(rest) > 0 {
		var line []byte
		line, rest, _ = bytes.Cut(rest, []byte("\n"))
		k, v, ok := bytes.Cut(line, []byte(": "))
		if !ok {
			continue
		}
		switch string(k) {
		case "tube":
			s.Tube = string(v)
		case "state":
			s.State = job.State(v)
		default:
			for i := range nums {
				if nums[i].key != string(k) {
					continue
				}
				n, err := strconv.ParseUint(string(v), 10, 64)
				if err != nil {
					errs = append(errs, fmt.Errorf("stats-job field %q = %q: %w", k, v, err))
				}
				*nums[i].dst, seen[i] = n, true
				break
			}
		}
	}
	for i, ok := range seen {
		if !ok {
			errs = append(errs, fmt.Errorf("stats-job field %q missing", nums[i].key))
		}
	}
	s.Pri = uint32(pri)
	if len(errs) > 0 {
		return s, fmt.Errorf("%w: %w", errBadStats, errors.Join(errs...))
	}
	return s, nil
}

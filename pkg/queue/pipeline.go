package queue

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/beanstalkd/go-beanstalk"

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
	err := p.with(context.WithoutCancel(ctx), batchOp(batch), func(c *conn) error {
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
func (c *conn) pipelineBatch(batch []*pipeReq, answered *int) error {
	if c.br == nil {
		c.br, c.bw, c.used = bufio.NewReader(c.nc), bufio.NewWriter(c.nc), DefaultTube
	}
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
			fmt.Fprintf(c.bw, "stats-job %d\r\n", r.id)
			continue
		}
		if r.tube != c.used {
			fmt.Fprintf(c.bw, "use %s\r\n", r.tube)
			c.used = r.tube
			useFirst[i] = true
		}
		fmt.Fprintf(c.bw, "put %d %d %d %d\r\n", r.o.Priority, int64(r.o.Delay.Seconds()), int64(r.o.TTR.Seconds()), len(r.body))
		c.bw.Write(r.body)
		c.bw.WriteString("\r\n")
	}
	if err := c.bw.Flush(); err != nil {
		c.used = "" // unknown: the connection is dropped anyway
		return err
	}
	for i, r := range batch {
		if r.statsJob {
			stats, refused, err := c.statsJobAnswer()
			if err != nil {
				return err
			}
			r.done <- pipeRes{stats: stats, err: refused}
			*answered++
			continue
		}
		if useFirst[i] {
			line, err := c.line()
			if err != nil {
				return err
			}
			if line != "USING "+r.tube {
				// The put that follows went to another tube, or the
				// answers no longer match the commands: the connection
				// is dropped and the rest of the batch fails.
				return fmt.Errorf("%w: use %s answered %q", errOutOfStep, r.tube, line)
			}
		}
		line, err := c.line()
		if err != nil {
			return err
		}
		id, err := parsePutAnswer(line)
		if errors.Is(err, errOutOfStep) {
			return err
		}
		if err != nil {
			_, err = classify("put", err)
		}
		r.done <- pipeRes{id: id, err: err}
		*answered++
	}
	return nil
}

func (c *conn) line() (string, error) {
	s, err := c.br.ReadString('\n')
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return "", err
	}
	return strings.TrimSuffix(s, "\r\n"), nil
}

// data reads the n bytes and the CRLF that follow an answer line of op
// (a job's body, a stats-job's dictionary).
func (c *conn) data(n int, op string) ([]byte, error) {
	b := make([]byte, n+2)
	if _, err := io.ReadFull(c.br, b); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	if string(b[n:]) != "\r\n" {
		return nil, fmt.Errorf("%w: %s data not followed by CRLF", errOutOfStep, op)
	}
	return b[:n:n], nil
}

var errOutOfStep = errors.New("unexpected answer from beanstalkd")

// parsePutAnswer reads beanstalkd's answer to a put: the new id, or the
// go-beanstalk error for a refusal, so classify maps it as for any
// command.
func parsePutAnswer(line string) (uint64, error) {
	word, rest, _ := strings.Cut(line, " ")
	switch word {
	case "INSERTED":
		id, err := strconv.ParseUint(rest, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%w: %q", errOutOfStep, line)
		}
		return id, nil
	case "BURIED":
		return 0, beanstalk.ErrBuried
	case "JOB_TOO_BIG":
		return 0, beanstalk.ErrJobTooBig
	case "DRAINING":
		return 0, beanstalk.ErrDraining
	case "OUT_OF_MEMORY":
		return 0, beanstalk.ErrOOM
	case "INTERNAL_ERROR":
		return 0, beanstalk.ErrInternal
	}
	// EXPECTED_CRLF, BAD_FORMAT, UNKNOWN_COMMAND or anything else: what
	// was written and what is read no longer match up.
	return 0, fmt.Errorf("%w: %q", errOutOfStep, line)
}

// statsJobAnswer reads beanstalkd's answer to a stats-job: "OK <bytes>"
// and a YAML dictionary. refused is an answer that is not the job's
// statistics (NOT_FOUND and the like, or a dictionary that does not
// parse), ready to hand to the caller; the connection stays good. err is
// the connection's: I/O, or an answer out of step.
func (c *conn) statsJobAnswer() (s job.Stats, refused, err error) {
	line, err := c.line()
	if err != nil {
		return s, nil, err
	}
	word, rest, _ := strings.Cut(line, " ")
	switch word {
	case "OK":
	case "NOT_FOUND":
		_, refused = classify("stats-job", beanstalk.ErrNotFound)
		return s, refused, nil
	case "OUT_OF_MEMORY":
		_, refused = classify("stats-job", beanstalk.ErrOOM)
		return s, refused, nil
	case "INTERNAL_ERROR":
		_, refused = classify("stats-job", beanstalk.ErrInternal)
		return s, refused, nil
	default:
		return s, nil, fmt.Errorf("%w: %q", errOutOfStep, line)
	}
	n, err := strconv.Atoi(rest)
	if err != nil || n < 0 || n > maxStatsJob {
		return s, nil, fmt.Errorf("%w: %q", errOutOfStep, line)
	}
	data, err := c.data(n, "stats-job")
	if err != nil {
		return s, nil, err
	}
	if s, err = parseJobStats(data); err != nil {
		return s, fmt.Errorf("stats-job: %w", err), nil
	}
	return s, nil, nil
}

// maxStatsJob bounds a stats-job answer: about 300 bytes, plus a tube name
// of up to 200.
const maxStatsJob = 64 << 10

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
	return s, errors.Join(errs...)
}

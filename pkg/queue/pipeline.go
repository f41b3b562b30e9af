package queue

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/beanstalkd/go-beanstalk"
)

// maxPipelined is the most puts one connection carries in one write.
const maxPipelined = 64

// putReq is one Put waiting for a connection.
type putReq struct {
	tube string
	body []byte
	o    PutOptions
	// taken is set, under the pipeline's lock, when a sender took the
	// request: from then on it goes out even if its caller gave up.
	taken bool
	done  chan putRes // buffered: a sender never waits for the caller
}

type putRes struct {
	id  uint64
	err error
}

// pipeline combines concurrent puts. A caller queues its put; whoever
// gets one of the sender slots takes every put queued at that moment,
// writes them on one pooled connection in one write, and reads their
// answers in order (beanstalkd answers in order). Under load that is one
// write and one read for many jobs instead of one each, on our side and
// beanstalkd's; with one caller at a time it is a plain put.
type pipeline struct {
	senders chan struct{} // one slot per sending connection

	mu      sync.Mutex
	pending []*putReq
}

func newPipeline(senders int) *pipeline {
	return &pipeline{senders: make(chan struct{}, senders)}
}

// putPipelined runs r on the pool through the pipeline.
func (p *Pool) putPipelined(ctx context.Context, r *putReq) (uint64, error) {
	pl := p.pipeline
	pl.mu.Lock()
	pl.pending = append(pl.pending, r)
	pl.mu.Unlock()
	for {
		select {
		case res := <-r.done:
			return res.id, res.err
		case pl.senders <- struct{}{}:
			if batch := pl.take(); len(batch) > 0 {
				p.send(ctx, batch)
			}
			<-pl.senders
			if pl.isTaken(r) {
				// Sent, by this caller or another: only the answer is
				// left to wait for (it comes within the command timeout),
				// not another turn at sending.
				res := <-r.done
				return res.id, res.err
			}
		case <-ctx.Done():
			if pl.withdraw(r) {
				return 0, fmt.Errorf("put: %w", ctx.Err())
			}
			// Already on its way: its answer comes within the command
			// timeout.
			res := <-r.done
			return res.id, res.err
		}
	}
}

// take removes and returns up to maxPipelined queued puts, oldest first.
func (pl *pipeline) take() []*putReq {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	n := min(len(pl.pending), maxPipelined)
	batch := make([]*putReq, n)
	copy(batch, pl.pending)
	for _, r := range batch {
		r.taken = true
	}
	rest := copy(pl.pending, pl.pending[n:])
	clear(pl.pending[rest:]) // no stale pointers behind the queue
	pl.pending = pl.pending[:rest]
	return batch
}

func (pl *pipeline) isTaken(r *putReq) bool {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	return r.taken
}

// withdraw removes r from the queue unless a sender took it already.
func (pl *pipeline) withdraw(r *putReq) bool {
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
// of the caller that happens to send it: the others' puts must not fail
// because that caller went away.
func (p *Pool) send(ctx context.Context, batch []*putReq) {
	answered := 0
	err := p.with(context.WithoutCancel(ctx), "put", func(c *conn) error {
		return c.pipelinePuts(batch, &answered)
	})
	for _, r := range batch[answered:] {
		if err == nil {
			err = errors.New("put: no answer from beanstalkd")
		}
		r.done <- putRes{err: err}
	}
}

// pipelinePuts writes the puts of batch and reads their answers, setting
// answered to how many requests it has answered. An error it returns is
// the connection's (I/O, or an answer out of step); a put that beanstalkd
// refuses is answered with its own error and the connection stays.
func (c *conn) pipelinePuts(batch []*putReq, answered *int) error {
	if c.br == nil {
		c.br, c.bw, c.used = bufio.NewReader(c.nc), bufio.NewWriter(c.nc), DefaultTube
	}
	// The puts of a batch are concurrent, so their order is free: grouped
	// by tube, the connection's current tube first, they need one use
	// per tube instead of one per switch.
	slices.SortStableFunc(batch, func(a, b *putReq) int {
		switch {
		case a.tube == b.tube:
			return 0
		case a.tube == c.used:
			return -1
		case b.tube == c.used:
			return 1
		}
		return strings.Compare(a.tube, b.tube)
	})
	useFirst := make([]bool, len(batch))
	for i, r := range batch {
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
		r.done <- putRes{id: id, err: err}
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

package queue

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/jobsys/jobs/pkg/job"
)

// client is one connection to beanstalkd and its text protocol
// (protocol.txt in beanstalkd's docs). Commands go into a buffer and out
// in one write at flush; beanstalkd answers them in order, so a caller can
// write many commands before it reads their answers. It is not safe for
// concurrent use: the pool hands each connection to one caller at a time.
type client struct {
	nc net.Conn
	r  *bufio.Reader
	w  *bufio.Writer
	// used is the tube this connection's puts go to: default on a new
	// connection, "" when unknown (a use whose answer was not read).
	used string
	// line is scratch for building command lines without allocating.
	line []byte
}

func dial(ctx context.Context, addr string, timeout time.Duration) (*client, error) {
	d := net.Dialer{Timeout: timeout, KeepAlive: 10 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%w: dial beanstalkd at %s: %w", ErrUnavailable, addr, err)
	}
	return &client{nc: nc, r: bufio.NewReader(nc), w: bufio.NewWriter(nc), used: DefaultTube}, nil
}

func (c *client) close() { _ = c.nc.Close() }

// deadline bounds the connection's next reads and writes by timeout and
// ctx's deadline; it fails when ctx is done already.
func (c *client) deadline(ctx context.Context, timeout time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	d := time.Now().Add(timeout)
	if cd, ok := ctx.Deadline(); ok && cd.Before(d) {
		d = cd
	}
	return c.nc.SetDeadline(d)
}

// do runs f under a deadline and names its error with op. It reports
// whether the connection is still good.
func (c *client) do(ctx context.Context, timeout time.Duration, op string, f func() error) (bool, error) {
	if err := ctx.Err(); err != nil {
		return true, fmt.Errorf("%s: %w", op, err)
	}
	if err := c.deadline(ctx, timeout); err != nil {
		return classify(op, err)
	}
	if err := f(); err != nil {
		return classify(op, err)
	}
	return true, nil
}

// beanstalkd's error answers that callers here need not tell apart from
// each other: each fails one command and leaves the connection usable.
var (
	errBuried       = errors.New("job buried: beanstalkd is out of memory to grow its priority queue")
	errTimedOut     = errors.New("no job came within the reserve's wait")
	errDeadlineSoon = errors.New("a job this connection reserved is about to time out")
	errOutOfMemory  = errors.New("beanstalkd refused: out of memory")
	errInternal     = errors.New("beanstalkd refused: internal error")
)

// errOutOfStep: what was written and what is read no longer match up (an
// answer no command expects, or beanstalkd could not read a command). The
// connection is dropped.
var errOutOfStep = errors.New("unexpected answer from beanstalkd")

// answerErrors maps the words of beanstalkd's error answers that fail
// one command to their errors.
var answerErrors = map[string]error{
	"NOT_FOUND":      ErrNotFound,
	"JOB_TOO_BIG":    ErrJobTooBig,
	"DRAINING":       ErrDraining,
	"BURIED":         errBuried,
	"TIMED_OUT":      errTimedOut,
	"DEADLINE_SOON":  errDeadlineSoon,
	"OUT_OF_MEMORY":  errOutOfMemory,
	"INTERNAL_ERROR": errInternal,
}

// outOfStep are the answers to a command beanstalkd could not read.
var outOfStep = map[string]string{
	"BAD_FORMAT":      "a command line beanstalkd could not parse",
	"UNKNOWN_COMMAND": "a command beanstalkd does not know",
	"EXPECTED_CRLF":   "a job body not followed by CRLF",
}

// classify names err with op and says whether the connection can be kept:
// beanstalkd's answers that fail one command leave it usable; I/O errors
// and answers out of step do not, and make the error ErrUnavailable.
func classify(op string, err error) (bool, error) {
	if keepsConn(err) {
		return true, fmt.Errorf("%s: %w", op, err)
	}
	return false, fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err)
}

// keepsConn reports whether err is one of beanstalkd's answers that fail
// one command and leave the connection usable.
func keepsConn(err error) bool {
	if err == nil || errors.Is(err, errOutOfStep) {
		return false
	}
	if errors.Is(err, errBadStats) {
		return true // read whole
	}
	for _, e := range answerErrors {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// unread makes err, met while answers of the same write are still to be
// read, drop the connection: those answers would be taken for the next
// commands'.
func unread(err error) error {
	if keepsConn(err) {
		return fmt.Errorf("%w: %w", errOutOfStep, err)
	}
	return err
}

// answerError is the error of an answer line that is not the one wanted.
func answerError(op, line string) error {
	word, _, _ := strings.Cut(line, " ")
	if err, ok := answerErrors[word]; ok {
		return err
	}
	if why, ok := outOfStep[word]; ok {
		return fmt.Errorf("%w: %s answered %s: %s", errOutOfStep, op, word, why)
	}
	return fmt.Errorf("%w: %s answered %q", errOutOfStep, op, line)
}

// cmd buffers the command line name followed by args.
func (c *client) cmd(name string, args ...uint64) {
	b := append(c.line[:0], name...)
	for _, a := range args {
		b = append(b, ' ')
		b = strconv.AppendUint(b, a, 10)
	}
	c.line = append(b, "\r\n"...)
	c.w.Write(c.line)
}

// cmdTube buffers the command line name tube.
func (c *client) cmdTube(name, tube string) {
	c.w.WriteString(name)
	c.w.WriteByte(' ')
	c.w.WriteString(tube)
	c.w.WriteString("\r\n")
}

// put buffers a put of body to the tube in use.
func (c *client) put(body []byte, o PutOptions) {
	c.cmd("put", uint64(o.Priority), seconds(o.Delay), seconds(o.TTR), uint64(len(body)))
	c.w.Write(body)
	c.w.WriteString("\r\n")
}

func seconds(d time.Duration) uint64 { return uint64(max(d, 0) / time.Second) }

// readLine reads one answer line, without its CRLF.
func (c *client) readLine() (string, error) {
	s, err := c.r.ReadString('\n')
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return "", err
	}
	return strings.TrimSuffix(s, "\r\n"), nil
}

// expect reads the answer to op and returns what follows want's word
// in it, or the answer's error.
func (c *client) expect(op, want string) (string, error) {
	line, err := c.readLine()
	if err != nil {
		return "", err
	}
	word, rest, _ := strings.Cut(line, " ")
	if word != want {
		return "", answerError(op, line)
	}
	return rest, nil
}

// expectID is expect for an answer that carries an id or a count.
func (c *client) expectID(op, want string) (uint64, error) {
	rest, err := c.expect(op, want)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(rest, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %s answered %s %q", errOutOfStep, op, want, rest)
	}
	return n, nil
}

// putAnswer reads the answer to a put: the new job's id, also when
// beanstalkd buried the job for want of memory (with errBuried).
func (c *client) putAnswer() (uint64, error) {
	line, err := c.readLine()
	if err != nil {
		return 0, err
	}
	word, rest, _ := strings.Cut(line, " ")
	if word != "INSERTED" && word != "BURIED" {
		return 0, answerError("put", line)
	}
	id, err := strconv.ParseUint(rest, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: put answered %q", errOutOfStep, line)
	}
	if word == "BURIED" {
		return id, errBuried
	}
	return id, nil
}

// data reads the n bytes and the CRLF that follow an answer line of op
// (a job's body, a YAML document).
func (c *client) data(n uint64, op string) ([]byte, error) {
	b := make([]byte, n+2)
	if _, err := io.ReadFull(c.r, b); err != nil {
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

// maxYAML bounds the YAML answers read (stats, stats-tube, stats-job,
// list-tubes): a list of tubes is the largest, up to 200 bytes a name.
const maxYAML = 16 << 20

// yaml reads an "OK <bytes>" answer to op and its YAML document.
func (c *client) yaml(op string) ([]byte, error) {
	n, err := c.expectID(op, "OK")
	if err != nil {
		return nil, err
	}
	if n > maxYAML {
		return nil, fmt.Errorf("%w: %s answered OK with %d bytes", errOutOfStep, op, n)
	}
	return c.data(n, op)
}

// roundTrip flushes the buffered commands and reads the answer to op.
func (c *client) roundTrip(op, want string) (string, error) {
	if err := c.w.Flush(); err != nil {
		return "", err
	}
	return c.expect(op, want)
}

// simple runs a command on a job (delete, kick-job, touch) answered
// with want alone.
func (c *client) simple(name string, id uint64, want string) error {
	c.cmd(name, id)
	_, err := c.roundTrip(name, want)
	return err
}

// serverStats runs stats.
func (c *client) serverStats() (map[string]string, error) {
	c.cmd("stats")
	if err := c.w.Flush(); err != nil {
		return nil, err
	}
	return c.dict("stats")
}

// statsJob runs stats-job on its own.
func (c *client) statsJob(id uint64) (job.Stats, error) {
	c.cmd("stats-job", id)
	if err := c.w.Flush(); err != nil {
		return job.Stats{}, err
	}
	return c.jobStats()
}

// jobStats reads the answer to a stats-job.
func (c *client) jobStats() (job.Stats, error) {
	data, err := c.yaml("stats-job")
	if err != nil {
		return job.Stats{}, err
	}
	return parseJobStats(data)
}

// dict reads the answer to op: "OK <bytes>" and a YAML dictionary.
func (c *client) dict(op string) (map[string]string, error) {
	data, err := c.yaml(op)
	if err != nil {
		return nil, err
	}
	return parseDict(data), nil
}

// listTubes runs list-tubes.
func (c *client) listTubes() ([]string, error) {
	c.cmd("list-tubes")
	if err := c.w.Flush(); err != nil {
		return nil, err
	}
	data, err := c.yaml("list-tubes")
	if err != nil {
		return nil, err
	}
	var names []string
	for line := range bytes.Lines(bytes.TrimPrefix(data, []byte("---\n"))) {
		if name, ok := bytes.CutPrefix(bytes.TrimSuffix(line, []byte("\n")), []byte("- ")); ok {
			names = append(names, string(name))
		}
	}
	return names, nil
}

// parseDict reads beanstalkd's YAML dictionary ("---" and "key: value"
// lines, a string value in double quotes) as strings by key.
func parseDict(data []byte) map[string]string {
	m := map[string]string{}
	for line := range bytes.Lines(bytes.TrimPrefix(data, []byte("---\n"))) {
		k, v, ok := bytes.Cut(bytes.TrimSuffix(line, []byte("\n")), []byte(": "))
		if !ok {
			continue
		}
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			v = v[1 : len(v)-1]
		}
		m[string(k)] = string(v)
	}
	return m
}

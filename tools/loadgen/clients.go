package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/beanstalkd/go-beanstalk"
	"github.com/valyala/fasthttp"

	"github.com/jobsys/jobs/pkg/testenv"
)

// payload returns a small JSON job body like the original's example,
// different for every call.
func payload(r *rand.Rand, n int) []byte {
	return fmt.Appendf(nil, `{"example":"data","n":%d,"r":"%016x"}`, n, r.Uint64())
}

// bsConn is a raw beanstalkd connection for the floors: the client
// library with nothing of ours in between.
type bsConn struct {
	nc net.Conn
	*beanstalk.Conn
}

// dialBeanstalk connects to addr; every command on the connection must
// finish before deadline.
func dialBeanstalk(ctx context.Context, addr string, deadline time.Time) (*bsConn, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial beanstalkd at %s: %w", addr, err)
	}
	_ = nc.SetDeadline(deadline)
	return &bsConn{nc: nc, Conn: beanstalk.NewConn(nc)}, nil
}

// tubeStats returns the ready and reserved counts of tube.
func (c *bsConn) tubeStats(tube string) (ready, reserved int, err error) {
	m, err := beanstalk.NewTube(c.Conn, tube).Stats()
	if errors.Is(err, beanstalk.ErrNotFound) {
		return 0, 0, nil // beanstalkd forgets an empty, unwatched tube
	}
	if err != nil {
		return 0, 0, fmt.Errorf("stats-tube %s: %w", tube, err)
	}
	ready, _ = strconv.Atoi(m["current-jobs-ready"])
	reserved, _ = strconv.Atoi(m["current-jobs-reserved"])
	return ready, reserved, nil
}

// putMany puts n jobs into tube over conns connections and returns their
// ids in no particular order.
func putMany(ctx context.Context, addr, tube string, n, conns int) ([]uint64, error) {
	ids := make([][]uint64, conns)
	errs := make([]error, conns)
	done := make(chan struct{})
	for c := range conns {
		go func() {
			defer func() { done <- struct{}{} }()
			bc, err := dialBeanstalk(ctx, addr, time.Now().Add(60*time.Second))
			if err != nil {
				errs[c] = err
				return
			}
			defer bc.Close()
			t := beanstalk.NewTube(bc.Conn, tube)
			r := rand.New(rand.NewPCG(uint64(c), uint64(time.Now().UnixNano())))
			for i := c; i < n && ctx.Err() == nil; i += conns {
				id, err := t.Put(payload(r, i), 1024, 0, 60*time.Second)
				if err != nil {
					errs[c] = fmt.Errorf("put into %s: %w", tube, err)
					return
				}
				ids[c] = append(ids[c], id)
			}
		}()
	}
	for range conns {
		<-done
	}
	var all []uint64
	for _, s := range ids {
		all = append(all, s...)
	}
	if err := errors.Join(errs...); err != nil {
		return all, err
	}
	return all, ctx.Err()
}

// burnIDs returns n job ids that beanstalkd at addr has issued and
// forgotten: it puts n jobs into a scratch tube and deletes them. Results
// stored under such ids look to the manager exactly like finished jobs,
// and they stay under beanstalkd's counter, so the manager's id fence
// (which moves the counter past the largest stored id) has nothing to do.
func burnIDs(ctx context.Context, addr string, n int) ([]uint64, error) {
	ids, err := putMany(ctx, addr, "bench-burn-"+testenv.RandomName(), n, 1)
	if err != nil {
		return nil, err
	}
	c, err := dialBeanstalk(ctx, addr, time.Now().Add(60*time.Second))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	for _, id := range ids {
		if err := c.Delete(id); err != nil {
			return nil, fmt.Errorf("delete scratch job %d: %w", id, err)
		}
	}
	return ids, nil
}

// newHTTPClient keeps up to conc connections to one host open.
func newHTTPClient(conc int) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConns:        conc * 2,
			MaxIdleConnsPerHost: conc * 2,
			MaxConnsPerHost:     conc * 2,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		},
	}
}

// errStatus is an answer with an unexpected status.
type errStatus struct {
	code int
	body string
}

func (e errStatus) Error() string { return fmt.Sprintf("status %d: %s", e.code, e.body) }

// postJob POSTs body to the manager and returns the new job's id.
func postJob(ctx context.Context, c *http.Client, managerURL, tube string, body []byte) (uint64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, managerURL+postTarget(tube), bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	code, b, err := send(c, req)
	if err != nil {
		return 0, err
	}
	return postAnswer(code, b)
}

// getJob GETs /id/ and returns the answer's body.
func getJob(ctx context.Context, c *http.Client, managerURL string, id uint64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, managerURL+getTarget(id), nil)
	if err != nil {
		return nil, err
	}
	code, b, err := send(c, req)
	if err != nil {
		return nil, err
	}
	return b, getAnswer(code, b)
}

// httpConn is one closed-loop client of the ingest and lookup phases,
// holding one keep-alive connection as each of the raw floor's clients
// holds one beanstalkd connection: fasthttp's HostClient. The load
// generator shares the two cores with the server it measures, and
// fasthttp's synchronous round trip costs it about 21us of CPU per POST,
// close to the hand-written client it replaced (19us), where net/http's
// transport costs 47us (PERFORMANCE.md, "HTTP client").
type httpConn struct {
	c    *fasthttp.HostClient
	host string // the Host header
	path string // the base URL's path, without a trailing slash
	req  fasthttp.Request
	resp fasthttp.Response
}

// newHTTPConn returns a client of base (http://host:port[/path]); it
// dials on its first request and again after the server closes.
func newHTTPConn(base string) (*httpConn, error) {
	u, err := url.Parse(base)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return nil, fmt.Errorf("%q is not an http:// URL", base)
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	return &httpConn{
		c: &fasthttp.HostClient{
			Addr: addr, MaxConns: 1, NoDefaultUserAgentHeader: true, DisableHeaderNamesNormalizing: true,
			Dial: func(addr string) (net.Conn, error) { return net.DialTimeout("tcp", addr, 5*time.Second) },
		},
		host: u.Host,
		path: strings.TrimRight(u.Path, "/"),
	}, nil
}

// Close closes the connection.
func (c *httpConn) Close() { c.c.CloseIdleConnections() }

var contentTypeJSON = []byte("application/json")

// do sends one request and returns the answer's status and body; the
// body is valid until the next call.
func (c *httpConn) do(ctx context.Context, method, target string, body []byte) (int, []byte, error) {
	// A path and a Host header: HostClient knows where to send it, and
	// a whole URL would be parsed again for every request.
	c.req.Reset()
	c.req.Header.SetHost(c.host)
	c.req.SetRequestURI(c.path + target)
	c.req.Header.SetMethod(method)
	if body != nil {
		c.req.Header.SetContentTypeBytes(contentTypeJSON)
		c.req.SetBodyRaw(body)
	}
	deadline := time.Now().Add(10 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := c.c.DoDeadline(&c.req, &c.resp, deadline); err != nil {
		if ctx.Err() != nil {
			return 0, nil, ctx.Err()
		}
		return 0, nil, fmt.Errorf("%s %s: %w", method, target, err)
	}
	return c.resp.StatusCode(), c.resp.Body(), nil
}

func (c *httpConn) postJob(ctx context.Context, tube string, body []byte) (uint64, error) {
	code, b, err := c.do(ctx, http.MethodPost, postTarget(tube), body)
	if err != nil {
		return 0, err
	}
	return postAnswer(code, b)
}

// getJob is getJob on one connection; the body is valid until the next
// request.
func (c *httpConn) getJob(ctx context.Context, id uint64) ([]byte, error) {
	code, b, err := c.do(ctx, http.MethodGet, getTarget(id), nil)
	if err != nil {
		return nil, err
	}
	return b, getAnswer(code, b)
}

func send(c *http.Client, req *http.Request) (int, []byte, error) {
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func postTarget(tube string) string {
	if tube == "" {
		return "/"
	}
	return "/?tube=" + tube
}

func getTarget(id uint64) string { return "/" + strconv.FormatUint(id, 10) + "/" }

// postAnswer checks a POST's answer: 201 and a job id.
func postAnswer(code int, b []byte) (uint64, error) {
	if code != http.StatusCreated {
		return 0, errStatus{code, strings.TrimSpace(string(b[:min(len(b), 200)]))}
	}
	var v struct {
		ID uint64 `json:"id"`
	}
	if err := json.Unmarshal(b, &v); err != nil || v.ID == 0 {
		return 0, fmt.Errorf("POST answer %q: no job id", b)
	}
	return v.ID, nil
}

// getAnswer checks a GET's answer: 200.
func getAnswer(code int, b []byte) error {
	if code != http.StatusOK {
		return errStatus{code, strings.TrimSpace(string(b[:min(len(b), 200)]))}
	}
	return nil
}

// wsURL turns the notifier's http URL into its WebSocket endpoint.
func wsURL(notifierURL string) string {
	u := strings.TrimRight(notifierURL, "/") + "/ws"
	if rest, ok := strings.CutPrefix(u, "https://"); ok {
		return "wss://" + rest
	}
	if rest, ok := strings.CutPrefix(u, "http://"); ok {
		return "ws://" + rest
	}
	return u
}

// goroutines reads go_goroutines from the notifier's metrics.
func goroutines(ctx context.Context, metricsURL string) (int, error) {
	v, err := metricValue(ctx, metricsURL, "go_goroutines")
	return int(v), err
}

// metricValue reads one series (a name, with its labels as exposed:
// `x_total{by="a"}`) from a Prometheus text exposition.
func metricValue(ctx context.Context, metricsURL, series string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL, nil)
	if err != nil {
		return 0, err
	}
	code, b, err := send(http.DefaultClient, req)
	if err != nil {
		return 0, err
	}
	if err := getAnswer(code, b); err != nil {
		return 0, err
	}
	return parseMetric(b, series)
}

func parseMetric(b []byte, series string) (float64, error) {
	for line := range strings.SplitSeq(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, series)
		if !ok || rest == "" || (rest[0] != ' ' && (rest[0] != '{' || strings.Contains(series, "{"))) {
			continue
		}
		f := strings.Fields(rest)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("%s line %q: %w", series, line, err)
		}
		return v, nil
	}
	return 0, fmt.Errorf("no %s in the metrics", series)
}

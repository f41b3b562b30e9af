package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/beanstalkd/go-beanstalk"
	"github.com/labstack/echo/v4"

	"github.com/jobsys/jobs/pkg/procs"
)

// plainEchoArg makes loadgen serve the plain lookup handler instead of
// measuring: `loadgen -serve-plain-echo 127.0.0.1:PORT BEANSTALK_ADDR`
// (port 0 as for nullHTTPArg).
// The lookup phase runs it as a reference: what the queued GET costs when
// written the obvious way with the project's libraries, next to the
// manager and to a handler that does nothing.
const plainEchoArg = "-serve-plain-echo"

// servePlainEcho answers GET /:id/ with the job's stats-job, asked of
// beanstalkd through go-beanstalk on a pool of connections (one
// request per connection at a time, as go-beanstalk wants), in Echo with
// no middleware, until ctx ends.
func servePlainEcho(ctx context.Context, addr, beanstalkAddr string, stdout io.Writer) error {
	pool := make(chan *beanstalk.Conn, 64)
	get := func() (*beanstalk.Conn, error) {
		select {
		case c := <-pool:
			return c, nil
		default:
			return beanstalk.Dial("tcp", beanstalkAddr)
		}
	}
	put := func(c *beanstalk.Conn) {
		select {
		case pool <- c:
		default:
			_ = c.Close()
		}
	}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.GET("/healthz", func(c echo.Context) error { return c.NoContent(http.StatusOK) })
	e.GET("/:id/", func(c echo.Context) error {
		id, err := strconv.ParseUint(c.Param("id"), 10, 64)
		if err != nil {
			return c.JSON(http.StatusBadRequest, map[string]string{"error": "bad id"})
		}
		conn, err := get()
		if err != nil {
			return c.JSON(http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
		}
		st, err := conn.StatsJob(id)
		if errors.Is(err, beanstalk.ErrNotFound) {
			put(conn)
			return c.JSON(http.StatusNotFound, map[string]string{"error": fmt.Sprintf("job %d not found", id)})
		}
		if err != nil {
			_ = conn.Close()
			return c.JSON(http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
		}
		put(conn)
		return c.JSON(http.StatusOK, st)
	})
	defer func() {
		for len(pool) > 0 {
			_ = (<-pool).Close()
		}
	}()
	return serveUntil(ctx, addr, e, stdout)
}

// startPlainEcho runs the plain lookup handler as a child process, as the
// manager runs, and returns its URL.
func (s *stack) startPlainEcho(ctx context.Context) (*procs.Proc, string, error) {
	return s.startReference(ctx, "plainecho", "the plain Echo handler", plainEchoArg, s.beanstalkAddr)
}

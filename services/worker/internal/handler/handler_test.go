package handler_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jobsys/jobs/services/worker/internal/handler"
)

func TestMD5IsTheOriginalHash(t *testing.T) {
	t.Parallel()
	h, ok := handler.Builtin(handler.MD5)
	require.True(t, ok)
	out, err := h.Handle(context.Background(), handler.Job{ID: 1, Body: []byte(`{"example":"data"}`)})
	require.NoError(t, err)
	require.Equal(t, "09ee943c4fa33cd5a355eb7a4e38f7ef", out.Hash)
}

func TestFailAlwaysFails(t *testing.T) {
	t.Parallel()
	h, ok := handler.Builtin(handler.Fail)
	require.True(t, ok)
	_, err := h.Handle(context.Background(), handler.Job{ID: 1, Body: []byte(`{}`)})
	require.ErrorIs(t, err, handler.ErrFail)
}

func TestParseDelay(t *testing.T) {
	t.Parallel()
	good := map[string]handler.Delay{
		"":          {},
		"0":         {},
		"2s":        {Min: 2 * time.Second, Max: 2 * time.Second},
		"1.5":       {Min: 1500 * time.Millisecond, Max: 1500 * time.Millisecond},
		"1s-5s":     {Min: time.Second, Max: 5 * time.Second},
		"1-5":       {Min: time.Second, Max: 5 * time.Second},
		" 250ms-1s": {Min: 250 * time.Millisecond, Max: time.Second},
		"3s-3s":     {Min: 3 * time.Second, Max: 3 * time.Second},
	}
	for in, want := range good {
		got, err := handler.ParseDelay(in)
		require.NoError(t, err, "%q", in)
		require.Equal(t, want, got, "%q", in)
	}
	for _, bad := range []string{"abc", "5s-1s", "-1s", "1s-", "1s-abc", "1s-2s-3s", "-"} {
		_, err := handler.ParseDelay(bad)
		require.Error(t, err, "%q", bad)
	}
}

func TestDelayPickStaysInRange(t *testing.T) {
	t.Parallel()
	d := handler.Delay{Min: 10 * time.Millisecond, Max: 20 * time.Millisecond}
	seen := map[bool]bool{}
	for range 1000 {
		p := d.Pick()
		require.GreaterOrEqual(t, p, d.Min)
		require.LessOrEqual(t, p, d.Max)
		seen[p < 15*time.Millisecond] = true
	}
	require.Len(t, seen, 2, "picks should spread over the range")
	require.Equal(t, 2*time.Second, handler.Delay{Min: 2 * time.Second, Max: 2 * time.Second}.Pick())
}

func TestWithDelayWaitsAndStopsOnCancel(t *testing.T) {
	t.Parallel()
	h, _ := handler.Builtin(handler.MD5)

	slow := handler.WithDelay(h, handler.Delay{Min: 100 * time.Millisecond, Max: 100 * time.Millisecond})
	start := time.Now()
	_, err := slow.Handle(context.Background(), handler.Job{Body: []byte(`x`)})
	require.NoError(t, err)
	require.GreaterOrEqual(t, time.Since(start), 100*time.Millisecond)

	stuck := handler.WithDelay(h, handler.Delay{Min: time.Hour, Max: time.Hour})
	ctx, cancel := context.WithCancelCause(context.Background())
	cause := errors.New("grace over")
	time.AfterFunc(20*time.Millisecond, func() { cancel(cause) })
	_, err = stuck.Handle(ctx, handler.Job{Body: []byte(`x`)})
	require.ErrorIs(t, err, cause)
}

func TestMuxPicksByTube(t *testing.T) {
	t.Parallel()
	m := handler.NewMux()
	fail, err := handler.FromSpec(handler.Fail, handler.Delay{}, handler.ExecOptions{})
	require.NoError(t, err)
	m.Handle("bad", fail)
	m.HandleFunc("echo", func(_ context.Context, j handler.Job) (handler.Output, error) { return handler.Raw(j.Body), nil })
	require.Equal(t, []string{"bad", "echo"}, m.Tubes())

	_, err = m.For("bad").Handle(context.Background(), handler.Job{Body: []byte(`x`)})
	require.ErrorIs(t, err, handler.ErrFail)
	out, err := m.For("echo").Handle(context.Background(), handler.Job{Body: []byte(`{"a": 1}`)})
	require.NoError(t, err)
	require.Equal(t, `{"a":1}`, string(out.Result))

	_, err = m.For("other").Handle(context.Background(), handler.Job{Body: []byte(`x`)})
	require.ErrorIs(t, err, handler.ErrNoHandler, "no default: other tubes fail")
	m.HandleDefault(handler.Func(func(context.Context, handler.Job) (handler.Output, error) {
		return handler.Output{Hash: "default"}, nil
	}))
	out, err = m.For("other").Handle(context.Background(), handler.Job{})
	require.NoError(t, err)
	require.Equal(t, "default", out.Hash)

	c := m.Clone()
	c.Handle("new", fail)
	require.False(t, m.Has("new"), "a clone's changes stay in the clone")

	require.PanicsWithValue(t, `tube "bad" has a handler already`, func() { m.Handle("bad", fail) })
	require.Panics(t, func() { m.Handle("-x", fail) })
	require.Panics(t, func() { m.Handle("x", nil) })

	_, err = handler.FromSpec("nope", handler.Delay{}, handler.ExecOptions{})
	require.ErrorContains(t, err, `unknown handler "nope"`)
}

func TestJSONOutput(t *testing.T) {
	t.Parallel()
	out, err := handler.JSON(map[string]string{"reversed": "olleh"})
	require.NoError(t, err)
	require.Equal(t, `{"reversed":"olleh"}`, string(out.Result))
	_, err = handler.JSON(func() {})
	require.Error(t, err)
}

package api

import (
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestRateLimiterForgetsIdleClients(t *testing.T) {
	t.Parallel()
	l := newRateLimiter(10) // burst 20
	now := time.Now()
	for i := range 1000 {
		ok, _ := l.allow("10.0.0."+strconv.Itoa(i), now)
		require.True(t, ok)
	}
	require.Equal(t, 1000, l.size())

	for range 20 {
		ok, _ := l.allow("busy", now)
		require.True(t, ok)
	}
	ok, wait := l.allow("busy", now)
	require.False(t, ok)
	require.InDelta(t, 100*time.Millisecond, wait, float64(time.Millisecond))

	// Past the idle time every quiet client is dropped; an active one
	// stays.
	later := now.Add(l.idle / 2)
	l.allow("busy", later)
	ok, _ = l.allow("fresh", now.Add(l.idle))
	require.True(t, ok)
	require.Equal(t, 2, l.size(), "only busy and fresh are left")
}

func TestRouteLabelsStayFew(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ method, path, want string }{
		{"GET", "/healthz", "/healthz"},
		{"POST", "/healthz", "/*"},
		{"POST", "/12/", "/*"},
		{"GET", "/12/", "/:id"},
		{"GET", "/abc", "/:id"},
		{"DELETE", "/12", "/:id"},
		{"GET", "/a/b/c", "/*"},
		{"PUT", "/", "/*"},
	} {
		require.Equal(t, tc.want, routeOf(tc.method, tc.path), "%s %s", tc.method, tc.path)
	}
}

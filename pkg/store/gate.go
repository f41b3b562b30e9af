package store

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// ErrSlow: reads of one kind have been timing out, and the store waits
// before it sends another; or one is still running and the caller's time
// ran out waiting for it. It also matches ErrUnavailable, so callers
// answer it as a database out of reach.
var ErrSlow = errors.New("database too slow")

// readKind names a read that a background loop repeats and that reads
// the whole collection on FerretDB: each kind has a gate of its own.
type readKind string

const (
	readMaxID    readKind = "largest id"
	readLast     readKind = "latest result"
	readLatest   readKind = "latest results"
	readAfter    readKind = "results after a cursor"
	readCount    readKind = "count by stored time"
	readFindMany readKind = "results by ids"
	// readExpiredFailures is the failure records' expiry on FerretDB
	// (retention.go).
	readExpiredFailures readKind = "expired failure records"
)

var readKinds = []readKind{readMaxID, readLast, readLatest, readAfter, readCount, readFindMany, readExpiredFailures}

// Gate timing. A read with no deadline of its own gets readTimeout, so
// that nothing scans for ever; after a read of a kind times out, that
// kind is refused at once for a back-off that doubles with each timeout
// in a row, from backoffMin up to backoffMax, and ends at its first
// success.
const (
	readTimeout = time.Minute
	backoffMin  = time.Second
	backoffMax  = time.Minute
)

// gate lets one read of a kind run at a time in this process and keeps
// a kind that times out from being sent again at once: a slow server
// gets one query of each kind, not one per caller per retry. The driver
// sends each query's deadline as maxTimeMS, so the server gives up on it
// when the caller does (FerretDB's find cancels its SQLite query).
type gate struct {
	run chan struct{} // holds a token while a read runs

	mu       sync.Mutex
	timeouts int       // in a row
	until    time.Time // refuse reads until then
}

// gates are a store's gates, one per kind.
type gates map[readKind]*gate

func newGates() gates {
	g := make(gates, len(readKinds))
	for _, k := range readKinds {
		g[k] = &gate{run: make(chan struct{}, 1)}
	}
	return g
}

// read runs fn as the one read of kind k in flight, or fails with
// ErrSlow: at once while k backs off, or when ctx ends while another
// read of k runs.
func (g gates) read(ctx context.Context, k readKind, fn func(ctx context.Context) error) error {
	gt := g[k]
	if err := gt.refused(k); err != nil {
		return err
	}
	select {
	case gt.run <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("read the %s: %w (one is still running): %w: %w", k, ErrSlow, ErrUnavailable, ctx.Err())
	}
	defer func() { <-gt.run }()
	// The read before may have just timed out.
	if err := gt.refused(k); err != nil {
		return err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, readTimeout)
		defer cancel()
	}
	err := fn(ctx)
	gt.mu.Lock()
	defer gt.mu.Unlock()
	switch {
	case err == nil:
		gt.timeouts, gt.until = 0, time.Time{}
	case isTimeout(err):
		gt.timeouts++
		gt.until = time.Now().Add(min(backoffMin<<min(gt.timeouts-1, 16), backoffMax))
	}
	return err
}

// refused returns ErrSlow while kind k backs off.
func (gt *gate) refused(k readKind) error {
	gt.mu.Lock()
	defer gt.mu.Unlock()
	if wait := time.Until(gt.until); wait > 0 {
		return fmt.Errorf("read the %s: %w: %d timed out in a row; next try in %s: %w",
			k, ErrSlow, gt.timeouts, wait.Round(time.Millisecond), ErrUnavailable)
	}
	return nil
}

// slow returns the kinds that back off now, sorted.
func (g gates) slow() []string {
	var out []string
	for k, gt := range g {
		gt.mu.Lock()
		if time.Now().Before(gt.until) {
			out = append(out, string(k))
		}
		gt.mu.Unlock()
	}
	sort.Strings(out)
	return out
}

// isTimeout reports whether err is a read that ran out of time (on
// either side), not one refused by a gate.
func isTimeout(err error) bool {
	return !errors.Is(err, ErrSlow) && (errors.Is(err, context.DeadlineExceeded) || isDriverTimeout(err))
}

// slowError is Ping's answer while some kind backs off.
func slowError(kinds []string) error {
	return fmt.Errorf("reads of the %s timed out: %w: %w", strings.Join(kinds, ", "), ErrSlow, ErrUnavailable)
}

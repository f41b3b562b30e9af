package main

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"
)

// summary is what one measured run produced: how many operations finished
// in the window, how fast, and their latency percentiles in milliseconds.
type summary struct {
	Count      int    `json:"count"`
	Errors     int    `json:"errors"`
	FirstError string `json:"first_error,omitempty"`
	// Unfinished operations were still running when the window closed.
	Unfinished int     `json:"unfinished"`
	Seconds    float64 `json:"seconds"`
	Rate       float64 `json:"per_second"`
	P50        float64 `json:"p50_ms"`
	P95        float64 `json:"p95_ms"`
	P99        float64 `json:"p99_ms"`
	Max        float64 `json:"max_ms"`
}

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// sorted, or 0 for no samples.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// summarize sorts samples in place and describes them; elapsed is the
// measuring window the rate is taken over.
func summarize(samples []time.Duration, errors int, elapsed time.Duration) summary {
	slices.Sort(samples)
	s := summary{Count: len(samples), Errors: errors, Seconds: elapsed.Seconds()}
	if elapsed > 0 {
		s.Rate = float64(len(samples)) / elapsed.Seconds()
	}
	if len(samples) > 0 {
		s.P50 = ms(percentile(samples, 50))
		s.P95 = ms(percentile(samples, 95))
		s.P99 = ms(percentile(samples, 99))
		s.Max = ms(samples[len(samples)-1])
	}
	return s
}

// loop is one closed-loop client: op runs one operation and is called
// again as soon as it returns. close releases what the loop holds.
type loop struct {
	op    func(ctx context.Context) error
	close func()
}

// hammerConfig says how many loops run and for how long. Operations that
// start during the warmup are not counted; the window is d after it.
type hammerConfig struct {
	conc   int
	warmup time.Duration
	d      time.Duration
	// tick, when set, is told the fraction of the window that has passed.
	tick func(frac float64)
}

// hammer runs conc loops made by newLoop (it is given the loop's index)
// for the warmup and the window, and summarizes the operations that
// finished inside the window. A failed operation counts as an error, not
// as a sample; when nothing succeeded the first error is returned.
func hammer(ctx context.Context, c hammerConfig, newLoop func(ctx context.Context, i int) (loop, error)) (summary, error) {
	loops := make([]loop, c.conc)
	for i := range loops {
		l, err := newLoop(ctx, i)
		if err != nil {
			for _, prev := range loops[:i] {
				prev.close()
			}
			return summary{}, fmt.Errorf("set up client %d: %w", i, err)
		}
		loops[i] = l
	}
	defer func() {
		for _, l := range loops {
			l.close()
		}
	}()

	start := time.Now()
	from := start.Add(c.warmup)
	until := from.Add(c.d)
	rctx, cancel := context.WithDeadline(ctx, until.Add(5*time.Second))
	defer cancel()

	var (
		mu       sync.Mutex
		all      []time.Duration
		errs     int
		firstErr error
		// unfinished counts operations still running when the window
		// closed.
		unfinished int
		wg         sync.WaitGroup
	)
	for _, l := range loops {
		wg.Go(func() {
			own := make([]time.Duration, 0, 4096)
			var n, late int
			var first error
			for rctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(until) {
					break
				}
				err := l.op(rctx)
				t1 := time.Now()
				// Count what finished inside the window: an operation
				// slower than the warmup still counts once it ends.
				if t1.Before(from) {
					continue
				}
				if !t1.Before(until) {
					late++
					continue
				}
				if err != nil {
					n++
					if first == nil {
						first = err
					}
					continue
				}
				own = append(own, t1.Sub(t0))
			}
			mu.Lock()
			all = append(all, own...)
			errs += n
			unfinished += late
			if firstErr == nil {
				firstErr = first
			}
			mu.Unlock()
		})
	}
	if c.tick != nil {
		done := make(chan struct{})
		var tw sync.WaitGroup
		tw.Go(func() {
			t := time.NewTicker(100 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-done:
					return
				case now := <-t.C:
					c.tick(min(1, max(0, float64(now.Sub(from))/float64(c.d))))
				}
			}
		})
		defer func() { close(done); tw.Wait() }()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return summary{}, err
	}
	s := summarize(all, errs, c.d)
	s.Unfinished = unfinished
	if firstErr != nil {
		s.FirstError = firstErr.Error()
	}
	if s.Count == 0 && firstErr != nil {
		return s, firstErr
	}
	if s.Count == 0 {
		return s, fmt.Errorf("no operation finished within the %s window (%d still running at its end)", c.d, unfinished)
	}
	return s, nil
}

package worker

import (
	"math/rand/v2"
	"time"
)

// Backoff is the release delay after a failed attempt: Base doubled for
// every earlier delivery, capped at Max, plus up to half of that again as
// jitter so that jobs failed together do not all return together.
type Backoff struct {
	Base time.Duration
	Max  time.Duration
}

// Delay is min(Base * 2^(attempt-1), Max), without jitter; attempt counts
// from 1.
func (b Backoff) Delay(attempt int) time.Duration {
	d := b.Base
	for i := 1; i < attempt && d < b.Max; i++ {
		d *= 2
	}
	return min(d, b.Max)
}

// Jittered is Delay plus a random part of up to half of it. beanstalkd
// counts delays in whole seconds, so delays of a second or more are
// rounded to the nearest second (the jitter still spreads them); shorter
// ones mean "at once".
func (b Backoff) Jittered(attempt int) time.Duration {
	d := b.Delay(attempt)
	if d <= 0 {
		return 0
	}
	d += rand.N(d/2 + 1)
	if d >= time.Second {
		d = d.Round(time.Second)
	}
	return d
}

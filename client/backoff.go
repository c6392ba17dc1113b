package client

import (
	"math/rand/v2"
	"time"
)

// backoff is exponential backoff with full jitter: the delay before attempt n is uniform in
// [0, min(max, base*2^n)]. Full jitter rather than a fixed or "equal jitter" delay because a fleet that lost
// its broker at the same instant must not come back at the same instant: every client draws its own delay,
// so reconnects spread over the whole window instead of arriving as waves.
type backoff struct {
	base, max time.Duration
	// intN returns a uniform value in [0, n); rand.Int64N (safe for concurrent use) unless a test injects one.
	intN func(n int64) int64
}

func newBackoff(base, max time.Duration) backoff {
	return backoff{base: base, max: max, intN: rand.Int64N}
}

// delay is the wait before attempt n (0 = the first retry).
func (b backoff) delay(attempt int) time.Duration {
	ceiling := b.base
	for i := 0; i < attempt && ceiling < b.max; i++ {
		ceiling *= 2 // doubling until max, never shifting by attempt: no overflow however long the outage
	}
	ceiling = min(ceiling, b.max)
	if ceiling <= 0 {
		return 0
	}
	return time.Duration(b.intN(int64(ceiling) + 1))
}

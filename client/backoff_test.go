package client

import (
	"testing"
	"time"
)

func TestBackoffBounds(t *testing.T) {
	lowest := backoff{base: time.Second, max: time.Minute, intN: func(int64) int64 { return 0 }}
	highest := backoff{base: time.Second, max: time.Minute, intN: func(n int64) int64 { return n - 1 }}
	for attempt, want := range []time.Duration{ // the ceiling of attempt n: min(max, base*2^n)
		0: time.Second, 1: 2 * time.Second, 2: 4 * time.Second, 5: 32 * time.Second, 6: time.Minute, 7: time.Minute,
	} {
		if want == 0 {
			continue
		}
		if got := lowest.delay(attempt); got != 0 {
			t.Errorf("attempt %d: lowest delay %s, want 0 (full jitter)", attempt, got)
		}
		if got := highest.delay(attempt); got != want {
			t.Errorf("attempt %d: highest delay %s, want %s", attempt, got, want)
		}
	}
	// A week-long outage: no overflow, still capped.
	if got := highest.delay(1_000_000); got != time.Minute {
		t.Errorf("attempt 1e6: %s, want the cap", got)
	}
}

// TestBackoffNoLockstep: 1000 clients that lose the broker at the same instant come back spread over the
// whole first window, not together: no 50 ms slot of the 1 s window holds more than 3x its share.
func TestBackoffNoLockstep(t *testing.T) {
	const clients, slots = 1000, 20
	window := time.Second
	counts := make([]int, slots)
	distinct := map[time.Duration]bool{}
	for range clients {
		d := newBackoff(window, time.Minute).delay(0)
		if d < 0 || d > window {
			t.Fatalf("delay %s outside [0, %s]", d, window)
		}
		distinct[d] = true
		counts[min(int(d*slots/window), slots-1)]++
	}
	if len(distinct) < clients*99/100 {
		t.Fatalf("only %d distinct delays among %d clients", len(distinct), clients)
	}
	for i, n := range counts {
		if n > 3*clients/slots || n == 0 {
			t.Fatalf("slot %d holds %d of %d reconnects (per slot: %v)", i, n, clients, counts)
		}
	}
}

// TestReconnectDelay: the first connection attempt is immediate; the first after a lost connection is
// already jittered (autopaho numbers each outage's attempts from 0).
func TestReconnectDelay(t *testing.T) {
	c := &Client{backoff: backoff{base: time.Second, max: time.Minute, intN: func(n int64) int64 { return n - 1 }}}
	for attempt, want := range []time.Duration{0, time.Second, 2 * time.Second} {
		if got := c.reconnectDelay(attempt); got != want {
			t.Errorf("initial connection, attempt %d: %s, want %s", attempt, got, want)
		}
	}
	c.up = true
	for attempt, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		if got := c.reconnectDelay(attempt); got != want {
			t.Errorf("reconnect, attempt %d: %s, want %s", attempt, got, want)
		}
	}
}

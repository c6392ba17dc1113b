package main

import (
	"context"
	"testing"
	"time"
)

func TestTrackerCountsEachMessageOnce(t *testing.T) {
	base := time.Now()
	tr := newTracker(base, 3, 100)
	in := tr.newInbox(5)
	buf := make([]byte, payloadHeaderSize+4)
	send := func(seq, pub int, phase uint32) {
		other := newTracker(base, phase, 100)
		other.stamp(buf, seq, pub)
		tr.deliver(in, buf)
	}
	for seq := range 100 {
		if seq != 42 {
			send(seq, 5, 3)
		}
	}
	send(7, 5, 3)           // duplicate
	send(8, 6, 3)           // another publisher
	send(9, 5, 2)           // an earlier phase
	send(100, 5, 3)         // beyond the series
	tr.deliver(in, buf[:8]) // truncated
	if got := tr.received.Load(); got != 99 {
		t.Errorf("received %d, want 99 (one missing)", got)
	}
	if tr.duplicates.Load() != 1 || tr.foreign.Load() != 4 {
		t.Errorf("duplicates %d foreign %d, want 1 and 4", tr.duplicates.Load(), tr.foreign.Load())
	}
	if tr.latency.n.Load() != 99 || tr.deliveredBy(base) <= 0 {
		t.Errorf("latency samples %d, delivered by %v", tr.latency.n.Load(), tr.deliveredBy(base))
	}
}

func TestTrackerAwaitStopsWhenQuiet(t *testing.T) {
	tr := newTracker(time.Now(), 1, 1)
	start := time.Now()
	tr.await(context.Background(), 10, 50*time.Millisecond)
	if d := time.Since(start); d < 50*time.Millisecond || d > 2*time.Second {
		t.Errorf("await returned after %v with nothing arriving and quiet 50ms", d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start = time.Now()
	tr.await(ctx, 10, time.Hour)
	if d := time.Since(start); d > time.Second {
		t.Errorf("await ignored a cancelled context for %v", d)
	}
}

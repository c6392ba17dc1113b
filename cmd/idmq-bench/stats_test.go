package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"syscall"
	"testing"
	"time"
)

func TestHistogramBucketsAreContiguous(t *testing.T) {
	for i := 0; i < histBuckets-1; i++ {
		if got := bucketOf(bucketUpper(i)); got != i {
			t.Fatalf("upper bound of bucket %d lands in %d", i, got)
		}
		if got := bucketOf(bucketUpper(i) + 1); got != i+1 {
			t.Fatalf("value after bucket %d lands in %d", i, got)
		}
	}
	if got := bucketOf(^uint64(0)); got != histBuckets-1 {
		t.Errorf("max uint64 in bucket %d of %d", got, histBuckets)
	}
}

func TestHistogramQuantilesWithinResolution(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var h histogram
	var exact []time.Duration
	for range 100000 {
		// Log-uniform over 10 µs .. 10 s, like latencies under load.
		d := time.Duration(1e4 * float64(uint64(1)<<rng.IntN(20)) * (1 + rng.Float64()))
		h.record(d)
		exact = append(exact, d)
	}
	slices.Sort(exact)
	prev := time.Duration(0)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		want := exact[int(q*float64(len(exact)))-1]
		got := h.quantile(q)
		if got < want || float64(got-want) > float64(want)/histSub {
			t.Errorf("p%v = %v, exact %v: outside 1/%d", q*100, got, want, histSub)
		}
		if got < prev {
			t.Errorf("p%v = %v below the previous percentile %v", q*100, got, prev)
		}
		prev = got
	}
	s := h.summary()
	if s.Count != 100000 || s.MaxMs != ms(exact[len(exact)-1]) {
		t.Errorf("summary count %d max %v, want 100000 and %v", s.Count, s.MaxMs, ms(exact[len(exact)-1]))
	}
}

func TestEmptyHistogram(t *testing.T) {
	var h histogram
	if s := h.summary(); s != (latency{}) {
		t.Errorf("empty summary %+v", s)
	}
}

func TestFailureReason(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"v5 refusal", &connackError{version: 5, code: 0x87}, "connack 0x87 not authorized"},
		{"v3 refusal", &connackError{version: 4, code: 4}, "connack 0x04 bad user name or password"},
		{"suback refusal", fmt.Errorf("wrapped: %w", &ackError{version: 5, kind: 9, code: 0x87}), "suback 0x87 not authorized"},
		{"refused port", fmt.Errorf("dial: %w", syscall.ECONNREFUSED), "connection refused"},
		{"ports exhausted", fmt.Errorf("dial: %w", syscall.EADDRNOTAVAIL), "no free local port (add --source-ips)"},
		{"descriptors exhausted", fmt.Errorf("dial: %w", syscall.EMFILE), "too many open files"},
		{"broker hung up", io.ErrUnexpectedEOF, "closed by broker"},
		{"scenario ended", context.DeadlineExceeded, "scenario timeout"},
		{"anything else", errors.New("odd"), "odd"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := failureReason(tt.err); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestFailuresCountByReason(t *testing.T) {
	var f failures
	if m, n := f.snapshot(); m != nil || n != 0 {
		t.Fatalf("empty: %v %d", m, n)
	}
	for range 3 {
		f.add(&connackError{version: 5, code: 0x86})
	}
	f.add(syscall.ECONNRESET)
	m, n := f.snapshot()
	if n != 4 || m["connack 0x86 bad user name or password"] != 3 || m["connection reset"] != 1 {
		t.Errorf("snapshot %v %d", m, n)
	}
}

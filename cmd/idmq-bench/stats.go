package main

import (
	"context"
	"errors"
	"io"
	"math"
	"math/bits"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// histogram records durations lock-free in log-linear buckets: exact below 64 ns, then 64 buckets per power of
// two, so any reported percentile is within 1/64 (1.6%) above the true value.
type histogram struct {
	counts [histBuckets]atomic.Uint64
	n      atomic.Uint64
	sum    atomic.Uint64
	max    atomic.Uint64
}

const (
	histSubBits = 6
	histSub     = 1 << histSubBits
	histBuckets = histSub + (64-histSubBits)*histSub
)

func bucketOf(v uint64) int {
	if v < histSub {
		return int(v)
	}
	shift := bits.Len64(v) - histSubBits - 1
	return histSub + shift*histSub + int(v>>shift) - histSub
}

// bucketUpper is the largest value that lands in bucket i.
func bucketUpper(i int) uint64 {
	if i < histSub {
		return uint64(i)
	}
	shift := (i - histSub) / histSub
	mantissa := uint64((i-histSub)%histSub + histSub)
	return (mantissa+1)<<shift - 1
}

func (h *histogram) record(d time.Duration) {
	v := uint64(max(d, 0))
	h.counts[bucketOf(v)].Add(1)
	h.n.Add(1)
	h.sum.Add(v)
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			return
		}
	}
}

// quantile is the value at or below which a fraction q of the records lie (0 with no records).
func (h *histogram) quantile(q float64) time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(n)))
	rank = min(max(rank, 1), n)
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			return time.Duration(min(bucketUpper(i), h.max.Load()))
		}
	}
	return time.Duration(h.max.Load())
}

// latency is a histogram summary in milliseconds, as printed in results.
type latency struct {
	Count  uint64  `json:"count"`
	MeanMs float64 `json:"mean"`
	P50Ms  float64 `json:"p50"`
	P90Ms  float64 `json:"p90"`
	P99Ms  float64 `json:"p99"`
	MaxMs  float64 `json:"max"`
}

func (h *histogram) summary() latency {
	n := h.n.Load()
	s := latency{Count: n, P50Ms: ms(h.quantile(0.5)), P90Ms: ms(h.quantile(0.9)), P99Ms: ms(h.quantile(0.99)), MaxMs: ms(time.Duration(h.max.Load()))}
	if n > 0 {
		s.MeanMs = ms(time.Duration(h.sum.Load() / n))
	}
	return s
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }

// failures counts errors by a short, stable reason so that 10,000 refusals print as one line.
type failures struct {
	mu sync.Mutex
	m  map[string]int
	n  int
}

func (f *failures) add(err error) {
	key := failureReason(err)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = map[string]int{}
	}
	f.m[key]++
	f.n++
}

func (f *failures) snapshot() (map[string]int, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == 0 {
		return nil, 0
	}
	out := make(map[string]int, len(f.m))
	for k, v := range f.m {
		out[k] = v
	}
	return out, f.n
}

func failureReason(err error) string {
	var ce *connackError
	var ae *ackError
	var ne net.Error
	switch {
	case errors.As(err, &ce):
		return ce.Error()
	case errors.As(err, &ae):
		return ae.Error()
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return "scenario timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "connection reset"
	case errors.Is(err, syscall.EADDRNOTAVAIL), errors.Is(err, syscall.EADDRINUSE):
		return "no free local port (add --source-ips)"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "too many open files"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "closed by broker"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	s := err.Error()
	if len(s) > 120 {
		s = s[:120]
	}
	return s
}

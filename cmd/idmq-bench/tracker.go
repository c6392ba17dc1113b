package main

import (
	"context"
	"encoding/binary"
	"sync/atomic"
	"time"
)

// tracker follows the messages of one phase: every payload carries its send time, sequence number, publisher
// index and phase, so deliveries are matched exactly (loss, duplicates, end-to-end latency) without any
// shared map on the hot path.
type tracker struct {
	base       time.Time // payload times are offsets from base, on the monotonic clock
	phase      uint32
	perPub     int // messages each publisher sends
	latency    histogram
	received   atomic.Int64 // unique deliveries
	duplicates atomic.Int64
	foreign    atomic.Int64 // payloads not meant for this subscriber or phase
	lastAt     atomic.Int64 // offset of the latest unique delivery
}

// inbox is one subscriber's view; only that subscriber's reader goroutine touches it.
type inbox struct {
	publisher uint32
	seen      []uint64 // bitset over sequence numbers
}

func newTracker(base time.Time, phase uint32, perPub int) *tracker {
	return &tracker{base: base, phase: phase, perPub: perPub}
}

func (t *tracker) newInbox(publisher int) *inbox {
	return &inbox{publisher: uint32(publisher), seen: make([]uint64, (t.perPub+63)/64)}
}

// stamp writes the header into a payload buffer of at least payloadHeaderSize bytes.
func (t *tracker) stamp(buf []byte, seq, publisher int) {
	binary.BigEndian.PutUint64(buf[0:8], uint64(time.Since(t.base)))
	binary.BigEndian.PutUint32(buf[8:12], uint32(seq))
	binary.BigEndian.PutUint32(buf[12:16], uint32(publisher))
	binary.BigEndian.PutUint32(buf[16:20], t.phase)
}

// deliver accounts one received payload for in.
func (t *tracker) deliver(in *inbox, payload []byte) {
	now := time.Since(t.base)
	if len(payload) < payloadHeaderSize || binary.BigEndian.Uint32(payload[16:20]) != t.phase ||
		binary.BigEndian.Uint32(payload[12:16]) != in.publisher {
		t.foreign.Add(1)
		return
	}
	seq := binary.BigEndian.Uint32(payload[8:12])
	if int(seq) >= t.perPub {
		t.foreign.Add(1)
		return
	}
	word, bit := seq/64, uint64(1)<<(seq%64)
	if in.seen[word]&bit != 0 {
		t.duplicates.Add(1)
		return
	}
	in.seen[word] |= bit
	t.latency.record(now - time.Duration(binary.BigEndian.Uint64(payload[0:8])))
	t.received.Add(1)
	for {
		last := t.lastAt.Load()
		if int64(now) <= last || t.lastAt.CompareAndSwap(last, int64(now)) {
			break
		}
	}
}

// await returns when expected deliveries arrived, when none arrived for quiet, or when ctx ends.
func (t *tracker) await(ctx context.Context, expected int64, quiet time.Duration) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	last, lastChange := t.received.Load(), time.Now()
	for {
		n := t.received.Load()
		if n >= expected {
			return
		}
		if n != last {
			last, lastChange = n, time.Now()
		} else if time.Since(lastChange) >= quiet {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// deliveredBy is the time from start to the last unique delivery.
func (t *tracker) deliveredBy(start time.Time) time.Duration {
	return time.Duration(t.lastAt.Load()) - start.Sub(t.base)
}

package main

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// pubCounters are shared by the publishers of one phase.
type pubCounters struct {
	sent    atomic.Int64
	acked   atomic.Int64
	refused failures
}

// publisher sends a numbered series of messages; at QoS 1 it keeps at most window PUBLISHes unacknowledged.
type publisher struct {
	window   chan struct{}
	counters *pubCounters
}

// newPublisher installs c's PUBACK handler, so call it before c.start. The window never exceeds the broker's
// Receive Maximum [MQTT-3.3.4-7].
func newPublisher(c *client, inflight int, counters *pubCounters) *publisher {
	p := &publisher{window: make(chan struct{}, max(1, min(inflight, c.receiveMax))), counters: counters}
	c.onPuback = func(code byte) {
		if code >= 0x80 {
			counters.refused.add(&ackError{version: c.version, kind: packets.Puback, code: code})
		} else {
			counters.acked.Add(1)
		}
		select {
		case <-p.window:
		default:
		}
	}
	return p
}

// run publishes count messages to topic, paced at rate per second when rate > 0, and at QoS 1 returns only
// once every PUBLISH is acknowledged (or ctx ends, or the connection drops).
func (p *publisher) run(ctx context.Context, c *client, tr *tracker, topic string, qos byte, index, count int, rate float64, payloadSize int) {
	buf := make([]byte, payloadSize)
	var interval time.Duration
	if rate > 0 {
		interval = time.Duration(float64(time.Second) / rate)
	}
	start := time.Now()
	for seq := 0; seq < count; seq++ {
		if interval > 0 {
			if d := time.Until(start.Add(time.Duration(seq) * interval)); d > 0 {
				sleep(ctx, d)
			}
		}
		if qos == 1 && !p.acquire(ctx, c) {
			return
		}
		if ctx.Err() != nil {
			return
		}
		tr.stamp(buf, seq, index)
		if err := c.publish(topic, qos, buf); err != nil {
			p.counters.refused.add(err)
			return
		}
		p.counters.sent.Add(1)
	}
	if qos == 1 {
		for range cap(p.window) {
			if !p.acquire(ctx, c) {
				return
			}
		}
	}
}

func (p *publisher) acquire(ctx context.Context, c *client) bool {
	select {
	case p.window <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	case <-c.done:
		return false
	}
}

// messageReport summarises one message phase that started publishing at start and finished publishing
// (QoS 1: acknowledged) after publishing.
func messageReport(tr *tracker, counters *pubCounters, qos byte, publishers, subscribers int, expected int64, start time.Time, publishing time.Duration) *messageStats {
	m := &messageStats{
		Publishers:  publishers,
		Subscribers: subscribers,
		Sent:        counters.sent.Load(),
		Acked:       counters.acked.Load(),
		Expected:    expected,
		Received:    tr.received.Load(),
		Duplicates:  tr.duplicates.Load(),
		Foreign:     tr.foreign.Load(),
		PublishS:    seconds(publishing),
		LatencyMs:   tr.latency.summary(),
	}
	m.PublishFailures, _ = counters.refused.snapshot()
	m.Lost = max(m.Expected-m.Received, 0)
	in := m.Sent
	if qos == 1 {
		in = m.Acked
	}
	if publishing > 0 {
		m.InPerS = round1(float64(in) / publishing.Seconds())
	}
	if d := tr.deliveredBy(start); m.Received > 0 && d > 0 {
		m.DeliverS = seconds(d)
		m.OutPerS = round1(float64(m.Received) / d.Seconds())
	}
	return m
}

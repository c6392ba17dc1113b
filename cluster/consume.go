package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Delivery is one message read from the stream.
type Delivery struct {
	Message
	Seq uint64 // stream sequence: what a persistent session stores as its cursor
}

// ConsumeOptions choose where a Consumer starts and what it passes on.
type ConsumeOptions struct {
	// StartSeq is the first stream sequence to deliver; 0 means the messages stored after Consume returns.
	StartSeq uint64
	// IncludeOwn also delivers messages this node published. The routing consumer leaves it false: the node
	// already delivered those locally, and passing them back would deliver them twice. A reader that needs
	// every message sets it (a resumed session's replay reads the stream its own way: sessions_stream.go).
	IncludeOwn bool
	// Filters narrows the consumer to NATS subjects (see FilterSubjects); none means every routed message.
	Filters []string
}

// Consumer reads the stream in order through one ordered consumer: an ephemeral, unacknowledged JetStream
// consumer that the client recreates from the last sequence it saw after a gap, a leader change or a lost
// heartbeat. One per node routes every message, whatever the number of subscriptions (unlike one durable
// consumer per subscription, nats-server#3116/#6191).
type Consumer struct {
	cc      jetstream.ConsumeContext
	wait    time.Duration
	lastSeq atomic.Uint64
	bad     atomic.Uint64
}

// Consume starts delivering messages to fn, one at a time, in stream order, from one goroutine, until Stop. ctx
// bounds the setup only. fn must not block for long: delivery waits for it (the ordered consumer's buffer then
// fills and the server holds back).
func (c *Cluster) Consume(ctx context.Context, opts ConsumeOptions, fn func(Delivery)) (*Consumer, error) {
	start := opts.StartSeq
	if start == 0 {
		// "New" fixed as a sequence now, so that a message stored after Consume returns is never missed.
		ctx, cancel := context.WithTimeout(ctx, c.opts.OpTimeout)
		info, err := c.b.stream.Info(ctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("cluster: reading the stream's last sequence: %w", err)
		}
		start = info.State.LastSeq + 1
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.OpTimeout)
	defer cancel()
	oc, err := c.b.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: opts.Filters,
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    start,
		// Names show the node in `nats consumer ls`; the random part keeps two consumers of one node apart (a
		// stopped one lingers on the server until its inactivity threshold).
		NamePrefix: "idmq-" + c.cfg.Node + "-" + randomToken()[:8],
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: creating the ordered consumer: %w", err)
	}
	k := &Consumer{wait: c.opts.OpTimeout}
	node := c.cfg.Node
	handler := func(jm jetstream.Msg) {
		meta, err := jm.Metadata()
		if err != nil {
			k.bad.Add(1)
			return
		}
		// Stored once the message is handled: LastSeq never names a message still being delivered, which a
		// persistent session's cursor relies on (sessions.go).
		defer k.lastSeq.Store(meta.Sequence.Stream)
		data := jm.Data()
		if !opts.IncludeOwn && originIs(data, node) {
			return
		}
		m, err := decodeEnvelope(data)
		if err != nil {
			k.bad.Add(1)
			c.log.Warn("cluster: skipping unreadable stream message", "seq", meta.Sequence.Stream, "err", err)
			return
		}
		fn(Delivery{Message: m, Seq: meta.Sequence.Stream})
	}
	// The client notices a consumer lost with its server (it lived on the stream leader) after two missed idle
	// heartbeats and recreates it; nats.go's default of 5s would stall routing for 10s after a leader's loss.
	hb := min(max(c.opts.Heartbeat, 500*time.Millisecond), 30*time.Second)
	cc, err := oc.Consume(handler, jetstream.PullHeartbeat(hb), jetstream.PullExpiry(max(5*hb, 2*time.Second)),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if !errors.Is(err, jetstream.ErrNoHeartbeat) {
				c.log.Debug("cluster: ordered consumer", "err", err)
			}
		}))
	if err != nil {
		return nil, fmt.Errorf("cluster: starting the ordered consumer: %w", err)
	}
	k.cc = cc
	return k, nil
}

// Stop ends delivery and waits (up to OpTimeout) until it has stopped: fn is not called after Stop returns.
// Calling Stop from fn would wait for itself; it returns after the timeout then.
func (k *Consumer) Stop() {
	k.cc.Stop()
	select {
	case <-k.cc.Closed():
	case <-time.After(k.wait):
	}
}

// LastSeq is the stream sequence of the last message handled: passed to fn and fn returned, or skipped (own
// messages included).
func (k *Consumer) LastSeq() uint64 { return k.lastSeq.Load() }

// Unreadable counts stream messages skipped because their envelope could not be decoded.
func (k *Consumer) Unreadable() uint64 { return k.bad.Load() }

// originIs reports whether the envelope's origin is node, without decoding the rest: encode writes the origin
// first.
func originIs(data []byte, node string) bool {
	if len(data) < 3 || data[0] != envelopeVersion || data[2] != tagOrigin {
		return false
	}
	n, w := binary.Uvarint(data[3:])
	if w <= 0 || n != uint64(len(node)) || len(data) < 3+w+len(node) {
		return false
	}
	return string(data[3+w:3+w+len(node)]) == node
}

package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Delivery is one message read from the stream. A stream message may carry several MQTT messages (a batch,
// see publisher.go): each is one Delivery with the same Seq, passed in order, one right after the other.
type Delivery struct {
	Message
	Seq  uint64 // stream sequence: what a persistent session stores as its cursor
	More bool   // more messages of the same stream message follow this one
}

// Through is the stream sequence up to which every message has been handled once d has: a cursor may name
// d.Seq only after the last message of its batch.
func (d *Delivery) Through() uint64 {
	if d.More {
		return d.Seq - 1
	}
	return d.Seq
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
//
// An unfiltered Consumer (the routing one) also watches for a stall: nats.go's ordered consumer was seen, after a
// SIGKILL of the stream leader's node under load, to stop delivering for good while the stream went on (about one
// kill in fifteen, e2e TestClusterKillUnderLoad). When the stream's last sequence is ahead of what the consumer
// read and the consumer made no progress for two checks in a row, it is replaced by a new ordered consumer from
// the next sequence: a late message rather than a lost one. Checks are 2s apart: nats.go's own recovery of a
// consumer that lived on a killed node may create its successor on that same node (JetStream counts a peer as
// live for 3s after its last answer) and then waits 10s for an answer before trying again, which left routing
// to a node stalled for 13s (e2e TestClusterNodeFailure under load).
type Consumer struct {
	c    *Cluster
	opts ConsumeOptions
	fn   func(Delivery)
	wait time.Duration

	mu       sync.Mutex
	cc       jetstream.ConsumeContext // nil while a replacement failed; the watchdog tries again
	delivery sync.Mutex               // held around each delivery: an old and a new consumer never overlap
	gen      atomic.Uint64            // deliveries of an older ordered consumer are dropped
	floor    uint64                   // the sequence before the first one asked for
	lastSeq  atomic.Uint64
	passed   atomic.Uint64 // messages passed to fn: progress inside a batch, whose sequence is stored at its end
	bad      atomic.Uint64
	restarts atomic.Uint64
	ctx      context.Context // ends at Stop: bounds the watchdog's calls
	quit     context.CancelFunc
	done     chan struct{}
}

// Consume starts delivering messages to fn, one at a time, in stream order, from one goroutine, until Stop. ctx
// bounds the setup only. fn must not block for long: delivery waits for it (the ordered consumer's buffer then
// fills and the server holds back; the routing consumer's fn waits up to mqtt.slow_subscriber_wait for a
// subscriber that is behind). The messages of one batch are passed together: no consumer replacement or
// Stop comes between them.
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
	k := &Consumer{c: c, opts: opts, fn: fn, wait: c.opts.OpTimeout, done: make(chan struct{})}
	k.ctx, k.quit = context.WithCancel(context.Background())
	k.floor = start - 1
	cc, err := k.open(ctx, start)
	if err != nil {
		k.quit()
		return nil, err
	}
	k.cc = cc
	if len(opts.Filters) == 0 {
		go k.watch()
	} else {
		close(k.done)
	}
	return k, nil
}

// open starts an ordered consumer at stream sequence start whose deliveries count while k.gen is unchanged.
func (k *Consumer) open(ctx context.Context, start uint64) (jetstream.ConsumeContext, error) {
	c := k.c
	ctx, cancel := context.WithTimeout(ctx, c.opts.OpTimeout)
	defer cancel()
	oc, err := c.b.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: k.opts.Filters,
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    start,
		// Names show the node in `nats consumer ls`; the random part keeps two consumers of one node apart (a
		// stopped one lingers on the server until its inactivity threshold).
		NamePrefix: "idmq-" + c.cfg.Node + "-" + randomToken()[:8],
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: creating the ordered consumer: %w", err)
	}
	gen := k.gen.Load()
	node := c.cfg.Node
	handler := func(jm jetstream.Msg) {
		k.delivery.Lock()
		defer k.delivery.Unlock()
		if k.gen.Load() != gen {
			return // replaced by the watchdog, or stopped
		}
		meta, err := jm.Metadata()
		if err != nil {
			k.bad.Add(1)
			return
		}
		// Stored once the message is handled: LastSeq never names a message still being delivered, which a
		// persistent session's cursor relies on (sessions.go).
		defer k.lastSeq.Store(meta.Sequence.Stream)
		data := jm.Data()
		if !k.opts.IncludeOwn && originIs(data, node) {
			return
		}
		seq := meta.Sequence.Stream
		err = decodeMessages(data, func(m Message, last bool) {
			k.fn(Delivery{Message: m, Seq: seq, More: !last})
			k.passed.Add(1)
		})
		if err != nil {
			k.bad.Add(1)
			c.log.Warn("cluster: skipping unreadable stream message", "seq", seq, "err", err)
		}
	}
	// The client notices a consumer lost with its server (it lived on the stream leader) after two missed idle
	// heartbeats and recreates it; nats.go's default of 5s would stall routing for 10s after a leader's loss.
	hb := k.heartbeat()
	cc, err := oc.Consume(handler, jetstream.PullHeartbeat(hb), jetstream.PullExpiry(max(5*hb, 2*time.Second)),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if !errors.Is(err, jetstream.ErrNoHeartbeat) {
				c.log.Debug("cluster: ordered consumer", "err", err)
			}
		}))
	if err != nil {
		return nil, fmt.Errorf("cluster: starting the ordered consumer: %w", err)
	}
	return cc, nil
}

func (k *Consumer) heartbeat() time.Duration {
	return min(max(k.c.opts.Heartbeat, 500*time.Millisecond), 30*time.Second)
}

// watch replaces a stalled ordered consumer (see Consumer) until Stop.
func (k *Consumer) watch() {
	defer close(k.done)
	every := max(2*k.heartbeat(), 2*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	var seen, seenPassed uint64
	idle := 0
	for {
		select {
		case <-k.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(k.ctx, k.wait)
		info, err := k.c.b.stream.Info(ctx)
		cancel()
		if err != nil {
			continue // no stream leader right now: nothing to compare with
		}
		read, passed := max(k.lastSeq.Load(), k.floor), k.passed.Load()
		k.mu.Lock()
		down := k.cc == nil
		k.mu.Unlock()
		// A batch held for a subscriber that is behind (mochifix.Fixes.HoldInline) is progress, not a stall.
		if read >= info.State.LastSeq || read != seen || passed != seenPassed {
			seen, seenPassed, idle = read, passed, 0
			if !down {
				continue
			}
		}
		if idle++; idle < 2 && !down {
			continue
		}
		k.c.log.Warn("cluster: routing consumer stalled; replacing it", "node", k.c.cfg.Node, "read", read,
			"stream_last", info.State.LastSeq)
		k.replace()
		idle = 0
	}
}

// replace stops the current ordered consumer and opens another after the last message delivered. It waits
// (up to OpTimeout) for a delivery in progress; if fn does not return, nothing is replaced.
func (k *Consumer) replace() {
	deadline := time.Now().Add(k.wait)
	for !k.delivery.TryLock() {
		if time.Now().After(deadline) {
			k.c.log.Warn("cluster: routing consumer blocked in a delivery; not replaced", "node", k.c.cfg.Node)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	k.gen.Add(1) // under delivery: no message of the old consumer is delivered from here on
	start := max(k.lastSeq.Load(), k.floor) + 1
	k.delivery.Unlock()
	k.mu.Lock()
	old := k.cc
	k.cc = nil
	k.mu.Unlock()
	if old != nil {
		// Not waited for: nats.go's Stop blocks until the ordered consumer's own recreation gives up (up to 10s
		// per try); the generation already keeps its deliveries out.
		go old.Stop()
	}
	cc, err := k.open(k.ctx, start)
	if err != nil {
		k.c.log.Warn("cluster: replacing the routing consumer", "err", err)
		return
	}
	k.restarts.Add(1)
	k.mu.Lock()
	k.cc = cc
	k.mu.Unlock()
}

// Stop ends delivery and waits (up to OpTimeout) until it has stopped: fn is not called after Stop returns.
// Calling Stop from fn would wait for itself; it returns after the timeout then.
func (k *Consumer) Stop() {
	if k.ctx.Err() != nil {
		return
	}
	k.quit()
	<-k.done
	k.mu.Lock()
	cc := k.cc
	k.cc = nil
	k.gen.Add(1)
	k.mu.Unlock()
	if cc == nil {
		return
	}
	cc.Stop()
	select {
	case <-cc.Closed():
	case <-time.After(k.wait):
	}
}

// Restarts counts stalled ordered consumers the watchdog replaced.
func (k *Consumer) Restarts() uint64 { return k.restarts.Load() }

// LastSeq is the stream sequence of the last message handled: passed to fn and fn returned, or skipped (own
// messages included).
func (k *Consumer) LastSeq() uint64 { return k.lastSeq.Load() }

// Unreadable counts stream messages skipped because their envelope could not be decoded.
func (k *Consumer) Unreadable() uint64 { return k.bad.Load() }

// originIs reports whether the envelope's or batch's origin is node, without decoding the rest: both have the
// origin first.
func originIs(data []byte, node string) bool {
	if len(data) < 3 || (data[0] != envelopeVersion && data[0] != batchVersion) || data[2] != tagOrigin {
		return false
	}
	n, w := binary.Uvarint(data[3:])
	if w <= 0 || n != uint64(len(node)) || len(data) < 3+w+len(node) {
		return false
	}
	return string(data[3+w:3+w+len(node)]) == node
}

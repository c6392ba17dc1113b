package mochifix

// Defect: mochi v2.7.9 drops a QoS 0 delivery when the subscriber's outbound queue (mqtt.outbound_queue) is
// full, even while the subscriber reads as fast as it can: a publisher can outrun the subscriber's writer for
// a moment, and the message is gone (issue 19: 86-92% delivered with 10 1:1 pairs at full speed, where
// Mosquitto and bare mochi, with a larger queue, deliver all).
// Fix: part of the backpressure fix. When mochi reports the drop (OnPublishDropped, in the publisher's
// goroutine), the publisher waits until the subscriber has written what was queued, then the message is
// written to it directly, after the queue: nothing is lost and the publisher's order is kept, since the
// publisher itself was waiting. The wait is bounded like the QoS 1/2 one: at most mqtt.slow_subscriber_wait,
// after which the subscriber is "slow" and dropped for as the queue overflows; the server's own publishes
// never wait. Nobody draining costs one atomic load per packet written. Measured (idmq-bench fanin, 10 QoS 0
// pairs x 10,000, defaults, 3 rounds beside Mosquitto 2.0.11): 100,000 of 100,000 delivered each round at
// 123-136k/s (Mosquitto 87-110k/s), where the previous code delivered 72-80%.
// Upstream: none filed.
// Proof: TestQoS0BurstIsPacedNotDropped (qos0pacing_test.go).
// Delete when: mochi paces publishers (or blocks) instead of dropping.

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// drainGrace is how long a drained queue's writer may take to report the write it had in hand.
const drainGrace = 2 * time.Millisecond

// drain counts the PUBLISH packets written to a subscriber whose queue overflowed.
type drain struct {
	written atomic.Int64
	wake    chan struct{} // one token: a PUBLISH was written
}

// drainState is the backpressure hook's record of subscribers being drained.
type drainState struct {
	count   atomic.Int64 // len(clients), read without the lock on every write
	mu      sync.Mutex
	clients map[*mqtt.Client]*drain
	users   map[*mqtt.Client]int // publishers waiting on each
}

func (h *backpressure) startDrain(cl *mqtt.Client) *drain {
	d := &h.drains
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.clients == nil {
		d.clients, d.users = map[*mqtt.Client]*drain{}, map[*mqtt.Client]int{}
	}
	dr, ok := d.clients[cl]
	if !ok {
		dr = &drain{wake: make(chan struct{}, 1)}
		d.clients[cl] = dr
		d.count.Add(1)
	}
	d.users[cl]++
	return dr
}

func (h *backpressure) endDrain(cl *mqtt.Client) {
	d := &h.drains
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.users[cl]--; d.users[cl] <= 0 {
		delete(d.users, cl)
		delete(d.clients, cl)
		d.count.Add(-1)
	}
}

// OnPacketSent runs in the goroutine that wrote pk to cl.
func (h *backpressure) OnPacketSent(cl *mqtt.Client, pk packets.Packet, _ []byte) {
	if h.drains.count.Load() == 0 || pk.FixedHeader.Type != packets.Publish {
		return
	}
	h.drains.mu.Lock()
	dr := h.drains.clients[cl]
	h.drains.mu.Unlock()
	if dr != nil {
		dr.written.Add(1)
		select {
		case dr.wake <- struct{}{}:
		default:
		}
	}
}

// OnPublishDropped runs in the publisher's goroutine when cl's outbound queue was full.
func (h *backpressure) OnPublishDropped(cl *mqtt.Client, pk packets.Packet) {
	if pk.FixedHeader.Qos > 0 || pk.Origin == "" || cl.Closed() || cl.Net.Inline {
		return // QoS 1/2: the in-flight window paces those; "": the server's own publish
	}
	h.mu.Lock()
	_, slow := h.slow[cl]
	h.mu.Unlock()
	if slow {
		return
	}
	queued := int64(h.server.Options.Capabilities.MaximumClientWritesPending)
	dr := h.startDrain(cl)
	defer h.endDrain(cl)
	target := dr.written.Load() + queued
	start := time.Now()
	timer := time.NewTimer(h.wait)
	defer timer.Stop()
	h.waits.Inc()
	// The queue held `queued` when mochi dropped; one more may have been in the writer's hands, counted
	// only once written. Wait for both, the last one briefly: it may not exist.
	var grace <-chan time.Time
	for dr.written.Load() < target+1 {
		if grace == nil && dr.written.Load() >= target {
			g := time.NewTimer(drainGrace)
			defer g.Stop()
			grace = g.C
		}
		select {
		case <-dr.wake:
			continue
		case <-grace:
		case <-h.stopped:
			return
		case <-timer.C:
			h.waitSeconds.Add(time.Since(start).Seconds())
			h.markSlow(cl)
			return
		}
		break
	}
	if cl.Closed() {
		return
	}
	h.waitSeconds.Add(time.Since(start).Seconds())
	h.writeLate(cl, pk)
}

// writeLate writes what mochi dropped as publishToClient would have queued it: the subscription's
// Retain As Published and identifiers, and QoS 0.
func (h *backpressure) writeLate(cl *mqtt.Client, pk packets.Packet) {
	sub, ok := h.server.Topics.Subscribers(pk.TopicName).Subscriptions[cl.ID]
	if !ok || (sub.NoLocal && pk.Origin == cl.ID) {
		return
	}
	out := pk.Copy(false)
	if cl.Properties.ProtocolVersion < 5 || !sub.RetainAsPublished {
		out.FixedHeader.Retain = false // [MQTT-3.3.1-12]
	}
	if len(sub.Identifiers) > 0 { // [MQTT-3.3.4-3]
		for _, id := range sub.Identifiers {
			out.Properties.SubscriptionIdentifier = append(out.Properties.SubscriptionIdentifier, id)
		}
		slices.Sort(out.Properties.SubscriptionIdentifier)
	}
	if cl.WritePacket(out) == nil {
		atomic.AddInt64(&h.server.Info.MessagesDropped, -1) // mochi counted it dropped; it was delivered
	}
}

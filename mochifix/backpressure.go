package mochifix

// Defect: mochi v2.7.9 keeps at most the server's maximum in-flight of unacknowledged QoS 1/2 messages per
// subscriber and drops the rest ("client store quota reached"), even while the subscriber acknowledges as
// fast as it can: a publisher's PUBACK waits for nobody downstream, so a publisher can run far ahead.
// Fix: a subscriber whose window (max in-flight or the outbound queue, whichever is smaller, or its MQTT 5
// Receive Maximum when smaller still) is 3/4 full
// is "behind" until it is back to half. A QoS 1/2 publish to a
// behind subscriber waits in OnPublish, before routing and before the publisher's PUBACK, so the
// publisher's read loop stops and TCP pushes back. The wait is bounded:
//   - at most `wait` per message; a subscriber that makes it expire is "slow" and not waited for again while
//     its connection lasts, so a stalled or hostile subscriber costs its publishers one wait, not one a message;
//   - a publisher that is itself behind never waits, so clients publishing to each other cannot wait in a cycle;
//   - offline sessions, inline (broker) publishes and shared subscriptions are not waited for, except the
//     publishes of an inline client registered with Fixes.HoldInline: a cluster node handing on messages
//     other nodes already acknowledged, which a full window would otherwise drop;
//   - Stop (server shutdown) releases every waiting publisher.
// Nobody behind costs one atomic load per QoS 1/2 publish and one in-flight length read per delivery.
// Upstream: none filed.
// Proof: TestQoS1SlowSubscriberLosesNothing, TestStalledSubscriberCostsPublishersOneWait (e2e),
// TestBackpressureWindowIsTheReceiveMaximum (receivemax_test.go), TestHeldInlinePublisherWaits.
// Delete when: mochi holds publishers (or queues beyond the window) instead of dropping.

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
)

type backpressure struct {
	mqtt.HookBase
	server    *mqtt.Server
	log       *slog.Logger
	wait      time.Duration
	high, low int // inflight lengths at which a subscriber becomes and stops being behind

	behindCount atomic.Int64 // len(behind), read without the lock on the hot path
	mu          sync.Mutex
	behind      map[*mqtt.Client]chan struct{} // closed when the subscriber is back under the low watermark
	slow        map[*mqtt.Client]struct{}      // subscribers not waited for again; dropped on disconnect
	stopped     chan struct{}
	stopOnce    sync.Once
	drains      drainState // QoS 0 (qos0pacing.go)
	heldInline  sync.Map   // *mqtt.Client -> struct{}: inline publishers that wait like clients (Fixes.HoldInline)

	waits, slowSubscribers prometheus.Counter
	waitSeconds            prometheus.Counter
}

func newBackpressure(server *mqtt.Server, maxInflight int, wait time.Duration, log *slog.Logger, reg prometheus.Registerer) *backpressure {
	h := &backpressure{
		server:  server,
		log:     log,
		wait:    wait,
		high:    max(1, maxInflight*3/4),
		low:     maxInflight / 2,
		behind:  make(map[*mqtt.Client]chan struct{}),
		slow:    make(map[*mqtt.Client]struct{}),
		stopped: make(chan struct{}),
		waits: prometheus.NewCounter(prometheus.CounterOpts{Name: "idmq_publisher_waits_total",
			Help: "QoS 1/2 publishes held because a subscriber's in-flight window was 3/4 full (mqtt.slow_subscriber_wait)."}),
		waitSeconds: prometheus.NewCounter(prometheus.CounterOpts{Name: "idmq_publisher_wait_seconds_total",
			Help: "Time publishers spent held for subscribers that were behind."}),
		slowSubscribers: prometheus.NewCounter(prometheus.CounterOpts{Name: "idmq_slow_subscribers_total",
			Help: "Subscribers that did not catch up within mqtt.slow_subscriber_wait and are no longer waited for."}),
	}
	if reg != nil {
		reg.MustRegister(h.waits, h.waitSeconds, h.slowSubscribers)
	}
	return h
}

func (h *backpressure) ID() string { return "idmq-backpressure" }

func (h *backpressure) Provides(b byte) bool {
	switch b {
	case mqtt.OnPublish, mqtt.OnQosPublish, mqtt.OnQosComplete, mqtt.OnQosDropped, mqtt.OnDisconnect,
		mqtt.OnPublishDropped, mqtt.OnPacketSent:
		return true
	}
	return false
}

// Stop releases publishers still waiting, so that shutdown never waits for a subscriber.
func (h *backpressure) Stop() error {
	h.stopOnce.Do(func() { close(h.stopped) })
	return nil
}

// OnQosPublish runs after mochi stored a delivery in the subscriber's window (in whichever goroutine
// routed it); a window at the high watermark marks the subscriber behind.
func (h *backpressure) OnQosPublish(cl *mqtt.Client, pk packets.Packet, _ int64, _ int) {
	high, _ := h.watermarks(cl)
	if pk.FixedHeader.Type != packets.Publish || cl.State.Inflight.Len() < high || cl.Closed() {
		return // an offline session's window fills by design; nobody waits for it
	}
	h.mu.Lock()
	if _, ok := h.behind[cl]; !ok {
		h.behind[cl] = make(chan struct{})
		h.behindCount.Add(1)
	}
	h.mu.Unlock()
}

// watermarks are the subscriber's: an MQTT 5 client's window is its Receive Maximum when that is smaller
// than the server's maximum in-flight (what receivemax.go holds beyond it still waits in mochi's store).
func (h *backpressure) watermarks(cl *mqtt.Client) (high, low int) {
	rm := int(cl.Properties.Props.ReceiveMaximum)
	if cl.Properties.ProtocolVersion < 5 || rm == 0 || rm*3/4 >= h.high {
		return h.high, h.low
	}
	return max(1, rm*3/4), rm / 2
}

// OnQosComplete runs in the subscriber's read loop when it acknowledged a delivery.
func (h *backpressure) OnQosComplete(cl *mqtt.Client, _ packets.Packet) {
	if h.behindCount.Load() == 0 {
		return
	}
	if _, low := h.watermarks(cl); cl.State.Inflight.Len() > low {
		return
	}
	h.release(cl)
}

// OnQosDropped: deliveries that expire leave the window too.
func (h *backpressure) OnQosDropped(cl *mqtt.Client, pk packets.Packet) {
	h.OnQosComplete(cl, pk)
}

// OnDisconnect: nobody waits for a subscriber that is gone, and its slow mark ends with the connection.
func (h *backpressure) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	h.release(cl)
	h.mu.Lock()
	delete(h.slow, cl)
	h.mu.Unlock()
}

func (h *backpressure) release(cl *mqtt.Client) {
	h.mu.Lock()
	if caughtUp, ok := h.behind[cl]; ok {
		delete(h.behind, cl)
		h.behindCount.Add(-1)
		close(caughtUp)
	}
	h.mu.Unlock()
}

// OnPublish runs in the publisher's read loop before the message is routed and acknowledged.
func (h *backpressure) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Qos == 0 || h.behindCount.Load() == 0 {
		return pk, nil
	}
	if _, held := h.heldInline.Load(cl); cl.Net.Inline && !held {
		return pk, nil
	}
	h.mu.Lock()
	_, selfBehind := h.behind[cl]
	h.mu.Unlock()
	if selfBehind {
		return pk, nil
	}
	var deadline <-chan time.Time
	var start time.Time
wait:
	for id, sub := range h.server.Topics.Subscribers(pk.TopicName).Subscriptions {
		if sub.Qos == 0 || (sub.NoLocal && id == cl.ID) {
			continue
		}
		subscriber, ok := h.server.Clients.Get(id)
		if !ok || subscriber == cl || subscriber.Closed() {
			continue
		}
		h.mu.Lock()
		caughtUp := h.behind[subscriber]
		_, slow := h.slow[subscriber]
		h.mu.Unlock()
		if caughtUp == nil || slow {
			continue
		}
		if deadline == nil {
			// One budget for the whole message, however many of its subscribers are behind.
			start = time.Now()
			timer := time.NewTimer(h.wait)
			defer timer.Stop()
			deadline = timer.C
			h.waits.Inc()
		}
		select {
		case <-caughtUp:
		case <-h.stopped:
			return pk, nil
		case <-deadline:
			h.markSlow(subscriber)
			// Spent: the remaining behind subscribers are not waited for on this message.
			break wait
		}
	}
	if !start.IsZero() {
		h.waitSeconds.Add(time.Since(start).Seconds())
	}
	return pk, nil
}

func (h *backpressure) markSlow(cl *mqtt.Client) {
	h.mu.Lock()
	_, already := h.slow[cl]
	if !already && !cl.Closed() {
		h.slow[cl] = struct{}{}
	}
	h.mu.Unlock()
	if already {
		return
	}
	h.slowSubscribers.Inc()
	h.log.Warn("subscriber is not keeping up with its messages; publishers no longer wait for it and what exceeds its window (mqtt.max_inflight) or queue (mqtt.outbound_queue) is dropped until it reconnects",
		"client", cl.ID, "listener", cl.Net.Listener, "inflight", cl.State.Inflight.Len(), "waited", h.wait)
}

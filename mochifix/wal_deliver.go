package mochifix

// Defect: mochi v2.7.9's publishToClient, which queues a message for one subscriber, is unexported, so the
// write-ahead log's replay (wal_replay.go) has to do the same for restored sessions itself.
// Fix: publishOffline, the same rules in the same order for a client without a connection.
// Upstream: none filed.
// Proof: TestPublishOffline (wal_deliver_test.go).
// Delete when: the log goes (wal_hook.go), or mochi exports a way to queue for one subscriber; compare
// with publishToClient at every mochi upgrade until then.

import (
	"errors"
	"log/slog"
	"slices"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// errNoLocal: the subscriber is the publisher and its subscription has No Local set [MQTT-3.8.3-3].
var errNoLocal = errors.New("mochifix: no local")

// publishOffline does for a restored, not connected session what mochi v2.7.9's publishToClient does for
// a client without a connection; replay cannot call mochi's, which is unexported. The same rules, in the
// same order: No Local, the ACL, the retain flag (FwdRetainedFlag, Retain As Published, 3.1.1), subscription
// identifiers, the lower of message, subscription and server QoS, the in-flight quota, a new packet id
// (OnPacketIDExhausted when none is free), the in-flight message, its store record (persist) and
// OnQosPublish. Topic aliases are skipped: they exist only within a network connection [MQTT-3.3.2-10],
// and this client has none yet; so is the send quota, which no restored session has.
//
// It returns the copy and nil when the copy is in flight, else why not, as publishToClient does:
// errNoLocal, packets.ErrNotAuthorized, packets.ErrQuotaExceeded (window full or packet ids exhausted),
// or packets.CodeDisconnect for a QoS 0 copy, which mochi drops for a client without a connection.
func publishOffline(s *mqtt.Server, hooks hookSet, cl *mqtt.Client, sub packets.Subscription, pk packets.Packet,
	persist func(*mqtt.Client, packets.Packet), log *slog.Logger) (packets.Packet, error) {
	if sub.NoLocal && pk.Origin == cl.ID {
		return pk, errNoLocal // [MQTT-3.8.3-3]
	}
	out := pk.Copy(false)
	if !hooks.OnACLCheck(cl, pk.TopicName, false) {
		return out, packets.ErrNotAuthorized
	}
	if !sub.FwdRetainedFlag && (cl.Properties.ProtocolVersion < 5 || !sub.RetainAsPublished) {
		out.FixedHeader.Retain = false // [MQTT-3.3.1-12], 3.1.1: [MQTT-3.3.1-9]
	}
	if len(sub.Identifiers) > 0 { // [MQTT-3.3.4-3]
		out.Properties.SubscriptionIdentifier = make([]int, 0, len(sub.Identifiers))
		for _, id := range sub.Identifiers {
			out.Properties.SubscriptionIdentifier = append(out.Properties.SubscriptionIdentifier, id)
		}
		slices.Sort(out.Properties.SubscriptionIdentifier)
	}
	caps := s.Options.Capabilities
	out.FixedHeader.Qos = min(out.FixedHeader.Qos, sub.Qos, caps.MaximumQos) // [MQTT-3.2.2-9]
	if out.FixedHeader.Qos == 0 {
		return out, packets.CodeDisconnect
	}
	if cl.State.Inflight.Len() >= int(caps.MaximumInflight) {
		atomic.AddInt64(&s.Info.InflightDropped, 1)
		log.Warn("wal replay: client store quota reached, message dropped", "client", cl.ID, "topic", pk.TopicName)
		return out, packets.ErrQuotaExceeded
	}
	id, err := cl.NextPacketID() // [MQTT-4.3.2-1] [MQTT-4.3.3-1]
	if err != nil {
		hooks.OnPacketIDExhausted(cl, pk)
		atomic.AddInt64(&s.Info.InflightDropped, 1)
		log.Warn("wal replay: packet ids exhausted, message dropped", "client", cl.ID, "topic", pk.TopicName)
		return out, packets.ErrQuotaExceeded
	}
	out.PacketID = uint16(id)
	if cl.State.Inflight.Set(out) { // [MQTT-4.3.2-3] [MQTT-4.3.3-3]
		atomic.AddInt64(&s.Info.Inflight, 1)
		persist(cl, out)
		hooks.OnQosPublish(cl, out, out.Created, 0)
		cl.State.Inflight.DecreaseSendQuota()
	}
	return out, nil
}

// hookSet asks a list of hooks what mochi's server asks its own (unexported) hook list, with the same
// rules: only hooks that provide the event, ACL verdicts OR-ed.
type hookSet []mqtt.Hook

func (hs hookSet) provides(event byte) bool {
	for _, h := range hs {
		if h.Provides(event) {
			return true
		}
	}
	return false
}

func (hs hookSet) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	for _, h := range hs {
		if h.Provides(mqtt.OnACLCheck) && h.OnACLCheck(cl, topic, write) {
			return true
		}
	}
	return false
}

func (hs hookSet) OnPacketIDExhausted(cl *mqtt.Client, pk packets.Packet) {
	for _, h := range hs {
		if h.Provides(mqtt.OnPacketIDExhausted) {
			h.OnPacketIDExhausted(cl, pk)
		}
	}
}

func (hs hookSet) OnQosPublish(cl *mqtt.Client, pk packets.Packet, sent int64, resends int) {
	for _, h := range hs {
		if h.Provides(mqtt.OnQosPublish) {
			h.OnQosPublish(cl, pk, sent, resends)
		}
	}
}

func (hs hookSet) OnSelectSubscribers(subs *mqtt.Subscribers, pk packets.Packet) *mqtt.Subscribers {
	for _, h := range hs {
		if h.Provides(mqtt.OnSelectSubscribers) {
			subs = h.OnSelectSubscribers(subs, pk)
		}
	}
	return subs
}

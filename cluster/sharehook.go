package cluster

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// The Hook's part in shared subscriptions (see sharing): membership follows subscriptions and connections,
// deliveries follow mochi's in-flight window. Subscribe, unsubscribe, session and acknowledgement events feed
// persistent sessions (sessions.go) too, first.

// sharingEvents are the hook events sharing needs besides those of routing.
func sharingEvents(b byte) bool {
	switch b {
	case mqtt.OnSelectSubscribers, mqtt.OnSubscribe, mqtt.OnSubscribed, mqtt.OnUnsubscribed, mqtt.OnSessionEstablished,
		mqtt.OnQosPublish, mqtt.OnQosComplete, mqtt.OnQosDropped, mqtt.OnPublishDropped:
		return true
	}
	return false
}

// OnSelectSubscribers takes shared subscribers out of mochi's local choice (see sharing.selectSubscribers).
func (h *Hook) OnSelectSubscribers(subs *mqtt.Subscribers, pk packets.Packet) *mqtt.Subscribers {
	return h.shared.selectSubscribers(subs, pk)
}

// OnSubscribe refuses shared subscriptions beyond the bounds (see sharequota.go).
func (h *Hook) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	return h.shared.admit(cl, pk)
}

// OnSubscribed makes the client a member of each shared group it was granted, before mochi sends the SUBACK.
func (h *Hook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, reasonCodes []byte) {
	refusedCodes(cl, pk, reasonCodes)
	h.sessions.subscribed(cl, pk, reasonCodes)
	for i, f := range pk.Filters {
		if i < len(reasonCodes) && reasonCodes[i] <= 2 {
			h.shared.join(cl, f.Filter)
		}
	}
	h.shared.unreserve(cl)
}

// OnUnsubscribed ends the client's membership in the groups it left.
func (h *Hook) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	h.sessions.unsubscribed(cl, pk)
	for _, f := range pk.Filters {
		h.shared.leave(cl, f.Filter)
	}
}

// OnSessionEstablished: a session taken over here keeps its shared memberships (one resumed from the
// cluster joins its groups when its subscriptions go live, see replay.goLive).
func (h *Hook) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	if !cl.Net.Inline {
		h.sessions.established(cl, pk.Connect.Clean)
	}
	h.shared.adopt(cl)
	for filter := range cl.State.Subscriptions.GetAll() {
		h.shared.join(cl, filter)
	}
}

func (h *Hook) OnQosPublish(cl *mqtt.Client, pk packets.Packet, _ int64, resends int) {
	h.sessions.qos2Queued(cl, &pk)
	h.shared.queued(cl, pk, resends)
}

// OnQosComplete: a member's PUBACK (QoS 1) or PUBCOMP (QoS 2) acknowledges its delivery to JetStream.
func (h *Hook) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	h.sessions.qos2Completed(cl, pk)
	h.sessions.acked(cl)
	if t := pk.FixedHeader.Type; t == packets.Puback || t == packets.Pubcomp {
		h.shared.completed(cl, pk.PacketID)
	}
}

func (h *Hook) OnQosDropped(cl *mqtt.Client, pk packets.Packet) {
	h.shared.dropped(cl, pk.PacketID)
}

func (h *Hook) OnPublishDropped(cl *mqtt.Client, pk packets.Packet) {
	h.shared.notQueued(cl, pk)
}

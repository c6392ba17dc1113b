package aclhook

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/idmq/idmq/mochifix"
)

// isV3 reports whether cl speaks MQTT 3.1 or 3.1.1, whose PUBACK/PUBREC carry no reason code.
// mochi answers a 3.1.1 publish its ACL check denies by writing a DISCONNECT (a packet 3.1.1 does not
// have) and closing; so for these clients OnACLCheck lets publishes through and OnPublish decides.
func isV3(cl *mqtt.Client) bool {
	v := cl.Properties.ProtocolVersion
	return (v == 3 || v == 4) && !cl.Net.Inline
}

// publishV3 checks a 3.1.1 client's publish. A denied one is dropped (ErrRejectPacket stops mochi
// before it retains, routes or acknowledges); QoS 1/2 is acknowledged normally (deny_action ignore) or
// the connection is closed without a packet (disconnect). [MQTT-3.3.5-2] allows either.
func (h *Hook) publishV3(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	d := h.rulesOf(cl).CheckPublish(pk.TopicName, pk.FixedHeader.Qos, pk.FixedHeader.Retain)
	if d.Allowed {
		return pk, nil
	}
	h.deny(cl, labelPublish, pk.TopicName, d)
	if pk.FixedHeader.Qos == 0 {
		return pk, packets.ErrRejectPacket
	}
	if h.rules.Load().denyAction == DenyDisconnect {
		_ = mochifix.Disconnect(cl, packets.ErrNotAuthorized, "") // closes; the Will is published
		return pk, packets.ErrRejectPacket
	}
	ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID}
	if pk.FixedHeader.Qos == 2 {
		// The PUBREL that follows finds no state for the id; mochi still answers PUBCOMP, and a 3.1.1
		// PUBCOMP carries no code, so the client sees a complete flow.
		ack.FixedHeader.Type = packets.Pubrec
	}
	if err := cl.WritePacket(ack); err != nil {
		return pk, err
	}
	return pk, packets.ErrRejectPacket
}

package mochifix

// Defect: mochi v2.7.9 keeps a QoS 2 delivery stored as PUBLISH after the subscriber's PUBREC (it updates
// only memory), so after a restart it sends the PUBLISH again to a client that may already have had the
// PUBREL and released the packet id: a duplicate.
// Fix: store the PUBREL state when the subscriber's PUBREC is read, before mochi answers with PUBREL; after
// a restart mochi then resends PUBREL [MQTT-4.3.3-5], not the PUBLISH.
// Upstream: none filed.
// Proof: TestStoreKeepsPubrelState (store_test.go).
// Delete when: mochi persists the PUBREL state (OnQosPublish with the PUBREL packet) in processPubrec.

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// OnPacketRead stores the PUBREL state; only a PUBREC that processPubrec will accept (a known packet id, a
// success reason code) is stored.
func (h *store) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type != packets.Pubrec || pk.ReasonCode >= packets.ErrUnspecifiedError.Code {
		return pk, nil
	}
	if out, ok := cl.State.Inflight.Get(pk.PacketID); ok && out.FixedHeader.Type == packets.Publish {
		rel := packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1},
			PacketID:    pk.PacketID,
			Origin:      out.Origin,
			Created:     out.Created,
		}
		h.Hook.OnQosPublish(cl, rel, rel.Created, 0)
	}
	return pk, nil
}

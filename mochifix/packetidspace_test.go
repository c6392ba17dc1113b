package mochifix

import (
	"bufio"
	"net"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// dialSession connects a raw MQTT 5 client to a session that outlives the connection.
func dialSession(t *testing.T, addr, id string) *rawV5 {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &rawV5{t: t, c: conn, r: bufio.NewReader(conn)}
	c.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect:    packets.ConnectParams{ProtocolName: []byte("MQTT"), ClientIdentifier: id, Keepalive: 60},
		Properties: packets.Properties{SessionExpiryInterval: 300, SessionExpiryIntervalFlag: true}})
	if pk, ok := c.next(5 * time.Second); !ok || pk.FixedHeader.Type != packets.Connack {
		t.Fatalf("no CONNACK: %+v", pk.FixedHeader)
	}
	return c
}

// expectType reads packets until one of type typ; it fails after 5 s.
func (c *rawV5) expectType(typ byte) packets.Packet {
	c.t.Helper()
	for {
		pk, ok := c.next(5 * time.Second)
		if !ok {
			c.t.Fatalf("no packet of type %d", typ)
		}
		if pk.FixedHeader.Type == typ {
			return pk
		}
	}
}

// TestPacketIDSpacesAreSeparate: the packet ids a client picks for its own QoS 1/2 publishes and those the
// server picks for its deliveries are separate spaces [MQTT-2.2.1-4]: a client publishing with the id of
// a delivery it has not acknowledged yet must not make the server forget that delivery, which is resent
// when the client reconnects [MQTT-4.4.0-1].
func TestPacketIDSpacesAreSeparate(t *testing.T) {
	for _, qos := range []byte{1, 2} {
		s, addr := startWithFixes(t, nil)
		c := dialSession(t, addr, "both-ways")
		c.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
			Filters: packets.Subscriptions{{Filter: "down", Qos: 1}}})
		c.expectType(packets.Suback)
		if err := s.Publish("down", []byte("delivery"), false, 1); err != nil {
			t.Fatal(err)
		}
		delivery := c.expectType(packets.Publish) // not acknowledged
		c.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos}, PacketID: delivery.PacketID,
			TopicName: "up", Payload: []byte("own publish")})
		answers := []byte{packets.Puback}
		if qos == 2 {
			answers = []byte{packets.Pubrec, packets.Pubcomp}
		}
		for _, typ := range answers {
			if typ == packets.Pubcomp {
				c.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: delivery.PacketID})
			}
			if ack := c.expectType(typ); ack.PacketID != delivery.PacketID {
				t.Fatalf("QoS %d: answer type %d carries id %d, the client's publish had %d", qos, typ, ack.PacketID, delivery.PacketID)
			}
		}
		// A SUBSCRIBE with the same id is not refused with 0x91 [MQTT-2.2.1-4].
		c.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: delivery.PacketID,
			Filters: packets.Subscriptions{{Filter: "more", Qos: 1}}})
		suback := readPacket(t, c.c, c.r, 5)
		if suback.FixedHeader.Type != packets.Suback {
			t.Fatalf("no SUBACK: type %d", suback.FixedHeader.Type)
		}
		if suback.PacketID != delivery.PacketID || len(suback.ReasonCodes) != 1 || suback.ReasonCodes[0] != 1 {
			t.Fatalf("SUBACK id %d codes %v, want id %d and granted QoS 1", suback.PacketID, suback.ReasonCodes, delivery.PacketID)
		}
		c.c.Close()

		c = dialSession(t, addr, "both-ways")
		pk, ok := c.next(2 * time.Second)
		if !ok || pk.FixedHeader.Type != packets.Publish || string(pk.Payload) != "delivery" {
			t.Fatalf("inbound QoS %d with the delivery's id %d: the unacknowledged delivery was not resent (got %+v)", qos, delivery.PacketID, pk.FixedHeader)
		}
	}
}

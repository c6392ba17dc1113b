package mochifix

import (
	"bufio"
	"net"
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/idmq/idmq/internal/testkit/wire"
)

// TestUserPropertiesReachAClientThatAskedForNoProblemInformation: a subscriber that sent Request Problem
// Information 0 still receives a PUBLISH's User Properties [MQTT-3.1.2-29] (without the fix: none).
func TestUserPropertiesReachAClientThatAskedForNoProblemInformation(t *testing.T) {
	s, addr, _ := startListening(t, func(s *mqtt.Server, l listeners.Listener) listeners.Listener {
		if err := s.AddHook(new(publishKeepsUserProperties), nil); err != nil {
			t.Fatal(err)
		}
		return l
	})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	send := func(pk *packets.Packet) {
		t.Helper()
		pk.ProtocolVersion = 5
		if err := wire.WritePacket(c, pk); err != nil {
			t.Fatal(err)
		}
	}
	send(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Properties: packets.Properties{RequestProblemInfo: 0, RequestProblemInfoFlag: true},
		Connect:    packets.ConnectParams{ProtocolName: []byte("MQTT"), ClientIdentifier: "sub", Keepalive: 60, Clean: true}})
	if pk := readPacket(t, c, r, 5); pk.FixedHeader.Type != packets.Connack {
		t.Fatalf("packet type %d, want CONNACK", pk.FixedHeader.Type)
	}
	send(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: "t", Qos: 0}}})
	if pk := readPacket(t, c, r, 5); pk.FixedHeader.Type != packets.Suback {
		t.Fatalf("packet type %d, want SUBACK", pk.FixedHeader.Type)
	}
	pub := s.NewClient(nil, "local", "pub", true)
	pub.Properties.ProtocolVersion = 5
	if err := s.InjectPacket(pub, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "t",
		Payload: []byte("x"), Properties: packets.Properties{User: []packets.UserProperty{{Key: "k", Val: "v"}}}}); err != nil {
		t.Fatal(err)
	}
	pk := readPacket(t, c, r, 5)
	if pk.FixedHeader.Type != packets.Publish {
		t.Fatalf("packet type %d, want PUBLISH", pk.FixedHeader.Type)
	}
	if len(pk.Properties.User) != 1 || pk.Properties.User[0] != (packets.UserProperty{Key: "k", Val: "v"}) {
		t.Fatalf("user properties %v, want [k=v]", pk.Properties.User)
	}
}

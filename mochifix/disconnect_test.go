package mochifix

import (
	"bufio"
	"net"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/idmq/idmq/internal/testkit/wire"
)

// readPacket reads the next packet on c for protocol version, within 5 s.
func readPacket(t *testing.T, c net.Conn, r *bufio.Reader, version byte) packets.Packet {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	pk, err := wire.ReadPacket(r, version)
	if err != nil {
		t.Fatal(err)
	}
	return pk
}

// TestDisconnectWritesReasonAndPublishesWill: an MQTT 5 client that asked for no problem information
// still gets the DISCONNECT's reason string, and its Will is published, once.
func TestDisconnectWritesReasonAndPublishesWill(t *testing.T) {
	s, addr, _ := startListening(t, func(s *mqtt.Server, l listeners.Listener) listeners.Listener {
		return Listener(l, s, ListenerOptions{})
	})
	watcher := dialConnect(t, addr, "watcher", true)
	wr := bufio.NewReader(watcher)
	if pk := readPacket(t, watcher, wr, 4); pk.FixedHeader.Type != packets.Connack {
		t.Fatalf("watcher: packet type %d, want CONNACK", pk.FixedHeader.Type)
	}
	if err := wire.WritePacket(watcher, &packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, ProtocolVersion: 4,
		PacketID: 1, Filters: packets.Subscriptions{{Filter: "will/#", Qos: 0}}}); err != nil {
		t.Fatal(err)
	}
	if pk := readPacket(t, watcher, wr, 4); pk.FixedHeader.Type != packets.Suback {
		t.Fatalf("watcher: packet type %d, want SUBACK", pk.FixedHeader.Type)
	}

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := wire.WritePacket(c, &packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 5,
		Properties: packets.Properties{RequestProblemInfo: 0, RequestProblemInfoFlag: true},
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), ClientIdentifier: "dev", Keepalive: 60, Clean: true,
			WillFlag: true, WillTopic: "will/dev", WillPayload: []byte("gone")}}); err != nil {
		t.Fatal(err)
	}
	cr := bufio.NewReader(c)
	if pk := readPacket(t, c, cr, 5); pk.FixedHeader.Type != packets.Connack {
		t.Fatalf("packet type %d, want CONNACK", pk.FixedHeader.Type)
	}
	var cl *mqtt.Client
	for deadline := time.Now().Add(5 * time.Second); cl == nil && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		cl, _ = s.Clients.Get("dev")
	}
	if err := Disconnect(cl, packets.ErrAdministrativeAction, "revoked by an administrator"); err != nil {
		t.Fatal(err)
	}
	pk := readPacket(t, c, cr, 5)
	if pk.FixedHeader.Type != packets.Disconnect {
		t.Fatalf("packet type %d, want DISCONNECT", pk.FixedHeader.Type)
	}
	if pk.ReasonCode != packets.ErrAdministrativeAction.Code || pk.Properties.ReasonString != "revoked by an administrator" {
		t.Fatalf("DISCONNECT 0x%02X %q", pk.ReasonCode, pk.Properties.ReasonString)
	}
	will := readPacket(t, watcher, wr, 4)
	if will.FixedHeader.Type != packets.Publish || will.TopicName != "will/dev" || string(will.Payload) != "gone" {
		t.Fatalf("watcher: packet type %d topic %q payload %q, want the Will", will.FixedHeader.Type, will.TopicName, will.Payload)
	}
	_ = watcher.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if b, err := wr.ReadByte(); err == nil {
		t.Fatalf("watcher got a second packet (type %d): the Will twice?", b>>4)
	}
	if err := Disconnect(cl, packets.ErrAdministrativeAction, ""); err != ErrNotConnected {
		t.Errorf("second Disconnect: %v, want ErrNotConnected", err)
	}
}

package aclhook

import (
	"bufio"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/idmq/idmq/internal/testkit/wire"
)

// TestV3DeniedPublishIgnored: with deny_action ignore (the default), a 3.1.1 client's denied QoS 1
// and QoS 2 publishes complete normally [MQTT-3.3.5-2], the connection stays up, nothing is
// delivered, and every denial is counted. A '$' topic stays denied.
func TestV3DeniedPublishIgnored(t *testing.T) {
	b := startBroker(t)
	bob := b.mustDialV5(t, "bob", "bob-1")
	if code := bob.SubscribeQoS1(t, "users/bob/#"); code != 0x01 {
		t.Fatalf("bob subscribe: %#x", code)
	}
	alice, _, err := dialV3(t, b, "alice", "alice-v3", "")
	if err != nil {
		t.Fatal(err)
	}
	before := b.denied(labelPublish)
	for _, p := range []struct {
		topic string
		qos   byte
	}{{"users/bob/q1", 1}, {"users/bob/q2", 2}, {"users/bob/q0", 0}, {"$SYS/broker/x", 1}} {
		pt := alice.Publish(p.topic, p.qos, true, "forbidden")
		if !pt.WaitTimeout(5*time.Second) || pt.Error() != nil {
			t.Fatalf("QoS %d publish to %s: not acknowledged (%v)", p.qos, p.topic, pt.Error())
		}
	}
	if !alice.IsConnectionOpen() {
		t.Fatal("the client was disconnected")
	}
	if got := b.denied(labelPublish) - before; got != 4 {
		t.Errorf("idmq_acl_denied_total{action=publish} grew by %v, want 4", got)
	}
	// Allowed traffic still flows on the same connection; bob receives the marker and nothing before it.
	root, _, err := dialV3(t, b, "root", "root-v3", "")
	if err != nil {
		t.Fatal(err)
	}
	if pt := root.Publish("users/bob/marker", 1, false, "m"); !pt.WaitTimeout(5*time.Second) || pt.Error() != nil {
		t.Fatal("marker not acknowledged")
	}
	if m := bob.Next(t, 5*time.Second); m.Topic != "users/bob/marker" {
		t.Fatalf("bob received %s from a denied publish", m.Topic)
	}
	if pt := alice.Publish("users/alice/ok", 1, false, "ok"); !pt.WaitTimeout(5*time.Second) || pt.Error() != nil {
		t.Fatal("an allowed publish after the denials failed")
	}
}

// TestV3DeniedPublishDisconnects: with deny_action disconnect, a 3.1.1 client's denied QoS 1 publish
// closes the connection without any packet (3.1.1 has no DISCONNECT from the server); an MQTT 5
// client still gets PUBACK 0x87 and stays connected.
func TestV3DeniedPublishDisconnects(t *testing.T) {
	cfg := brokerConfig
	cfg.DenyAction = DenyDisconnect
	b := startBrokerWith(t, cfg, time.Now)

	c, r := dialRawV3(t, b.addr, "alice", "alice-raw")
	if err := wire.WritePacket(c, &packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		ProtocolVersion: 4, PacketID: 9, TopicName: "users/bob/x", Payload: []byte("forbidden")}); err != nil {
		t.Fatal(err)
	}
	if b0, err := r.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("read %#x (%v) after the denied publish, want the connection closed without a packet", b0, err)
	}

	v5 := b.mustDialV5(t, "alice", "alice-v5")
	if code := publishV5(t, v5, &paho.Publish{Topic: "users/bob/x", QoS: 1}); code != 0x87 {
		t.Fatalf("v5 PUBACK %#x, want 0x87", code)
	}
	if code := publishV5(t, v5, &paho.Publish{Topic: "users/alice/x", QoS: 1}); code != 0 {
		t.Fatalf("v5 client after its denial: PUBACK %#x", code)
	}
}

// TestDenyActionFollowsReload: deny_action changes with a reload, as the rules do; a 3.1.1 client's
// denied QoS 1 publish is acknowledged under ignore and closes the same connection once a reload made
// it disconnect.
func TestDenyActionFollowsReload(t *testing.T) {
	b := startBroker(t)
	c, r := dialRawV3(t, b.addr, "alice", "alice-reload")
	publish := func(id uint16) {
		t.Helper()
		if err := wire.WritePacket(c, &packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
			ProtocolVersion: 4, PacketID: id, TopicName: "users/bob/x", Payload: []byte("forbidden")}); err != nil {
			t.Fatal(err)
		}
	}
	publish(1)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if pk, err := wire.ReadPacket(r, 4); err != nil || pk.FixedHeader.Type != packets.Puback || pk.PacketID != 1 {
		t.Fatalf("under ignore: type %d id %d (%v), want PUBACK 1", pk.FixedHeader.Type, pk.PacketID, err)
	}
	cfg := brokerConfig
	cfg.DenyAction = DenyDisconnect
	if err := b.hook.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	publish(2)
	if b0, err := r.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("read %#x (%v) after the reload to disconnect, want the connection closed without a packet", b0, err)
	}
}

// dialRawV3 connects a raw 3.1.1 client as username and reads its CONNACK.
func dialRawV3(t *testing.T, addr, username, clientID string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r := bufio.NewReader(c)
	if err := wire.WritePacket(c, &packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), ClientIdentifier: clientID, Keepalive: 30, Clean: true,
			UsernameFlag: true, Username: []byte(username)}}); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if pk, err := wire.ReadPacket(r, 4); err != nil || pk.FixedHeader.Type != packets.Connack || pk.ReasonCode != 0 {
		t.Fatalf("CONNACK: type %d code %#x (%v)", pk.FixedHeader.Type, pk.ReasonCode, err)
	}
	return c, r
}

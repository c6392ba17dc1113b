package mochifix

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/idmq/idmq/internal/testkit/wire"
)

// readPacket reads one packet from r and decodes its fixed header; body is the rest.
func readPacket(t *testing.T, c net.Conn, r *bufio.Reader) (packets.FixedHeader, []byte) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := r.ReadByte()
	if err != nil {
		t.Fatal(err)
	}
	var fh packets.FixedHeader
	if err := fh.Decode(b); err != nil {
		t.Fatal(err)
	}
	n, _, err := packets.DecodeLength(r)
	if err != nil {
		t.Fatal(err)
	}
	fh.Remaining = n
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		t.Fatal(err)
	}
	return fh, body
}

// TestDisconnectWritesReasonAndPublishesWill: an MQTT 5 client that asked for no problem information
// still gets the DISCONNECT's reason string, and its Will is published, once.
func TestDisconnectWritesReasonAndPublishesWill(t *testing.T) {
	s, addr, _ := startListening(t, func(s *mqtt.Server, l listeners.Listener) listeners.Listener {
		return Listener(l, s, ListenerOptions{})
	})
	watcher := dialConnect(t, addr, "watcher")
	wr := bufio.NewReader(watcher)
	if fh, _ := readPacket(t, watcher, wr); fh.Type != packets.Connack {
		t.Fatalf("watcher: packet type %d, want CONNACK", fh.Type)
	}
	if err := wire.WritePacket(watcher, &packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, ProtocolVersion: 4,
		PacketID: 1, Filters: packets.Subscriptions{{Filter: "will/#", Qos: 0}}}); err != nil {
		t.Fatal(err)
	}
	if fh, _ := readPacket(t, watcher, wr); fh.Type != packets.Suback {
		t.Fatalf("watcher: packet type %d, want SUBACK", fh.Type)
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
	if fh, _ := readPacket(t, c, cr); fh.Type != packets.Connack {
		t.Fatalf("packet type %d, want CONNACK", fh.Type)
	}
	var cl *mqtt.Client
	for deadline := time.Now().Add(5 * time.Second); cl == nil && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		cl, _ = s.Clients.Get("dev")
	}
	if err := Disconnect(cl, packets.ErrAdministrativeAction, "revoked by an administrator"); err != nil {
		t.Fatal(err)
	}
	fh, body := readPacket(t, c, cr)
	pk := packets.Packet{FixedHeader: fh, ProtocolVersion: 5}
	if err := pk.DisconnectDecode(body); err != nil || fh.Type != packets.Disconnect {
		t.Fatalf("packet type %d (%v), want DISCONNECT", fh.Type, err)
	}
	if pk.ReasonCode != packets.ErrAdministrativeAction.Code || pk.Properties.ReasonString != "revoked by an administrator" {
		t.Fatalf("DISCONNECT 0x%02X %q", pk.ReasonCode, pk.Properties.ReasonString)
	}
	fh, body = readPacket(t, watcher, wr)
	if fh.Type != packets.Publish || !bytes.Contains(body, []byte("will/dev")) || !bytes.HasSuffix(body, []byte("gone")) {
		t.Fatalf("watcher: packet type %d % x, want the Will", fh.Type, body)
	}
	_ = watcher.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if b, err := wr.ReadByte(); err == nil {
		t.Fatalf("watcher got a second packet (type %d): the Will twice?", b>>4)
	}
	if err := Disconnect(cl, packets.ErrAdministrativeAction, ""); err != ErrNotConnected {
		t.Errorf("second Disconnect: %v, want ErrNotConnected", err)
	}
}

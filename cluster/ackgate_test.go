package cluster

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/nats-io/nats.go"

	"github.com/idmq/idmq/mochifix"
)

// startSolo starts one node without routes (DontListen: in-process only).
func startSolo(t *testing.T) []*Cluster {
	t.Helper()
	cfg := Config{Node: "solo"}
	cfg.SetDefaults(t.TempDir())
	return startNodes(t, []Config{cfg})
}

func encodedAck(t *testing.T, typ byte, pid uint16) []byte {
	t.Helper()
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: typ}, PacketID: pid, ProtocolVersion: 5}
	var buf bytes.Buffer
	var err error
	if typ == packets.Pubrec {
		err = pk.PubrecEncode(&buf)
	} else {
		err = pk.PubackEncode(&buf)
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// gatedPipe is a mochifix.CoalescingConn with a gate, and the client's end of the connection.
func gatedPipe(t *testing.T) (*mochifix.CoalescingConn, *ackGate, net.Conn) {
	server, client := net.Pipe()
	t.Cleanup(func() { server.Close(); client.Close() })
	conn := mochifix.NewCoalescingConn(server)
	g := newAckGate(conn)
	conn.SetAckGate(g)
	return conn, g, client
}

// TestAckGateReleasesInOrderAfterJetStream: acknowledgements of routed publishes reach the client only after
// JetStream's ack, in the order mochi wrote them, an acknowledgement of an unrouted publish written in between
// keeping its place; nothing is held when no routed publish is pending.
func TestAckGateReleasesInOrderAfterJetStream(t *testing.T) {
	nodes := startSolo(t)
	conn, g, client := gatedPipe(t)
	// The client reads from the start: net.Pipe has no buffer, and a release JetStream acknowledged before the
	// loop ends would otherwise block the gate's write, under the connection's lock, and so the loop's next Write.
	const wantLen = 4 * 4 // four acknowledgements of 4 bytes
	read := make(chan []byte, 1)
	go func() {
		got := make([]byte, wantLen)
		_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, _ := io.ReadFull(client, got)
		read <- got[:n]
	}()
	var want []byte
	for i, pid := range []uint16{7, 8, 9} {
		ack, err := nodes[0].PublishAsync(&Message{Topic: "gate/x", QoS: 1})
		if err != nil {
			t.Fatal(err)
		}
		g.expect(pid, ack)
		typ := packets.Puback
		if i == 1 {
			typ = packets.Pubrec
		}
		p := encodedAck(t, typ, pid)
		if _, err := conn.Write(p); err != nil {
			t.Fatal(err)
		}
		want = append(want, p...)
		if i == 1 { // refused by ACL: not routed, written between routed ones
			p := encodedAck(t, packets.Puback, 100)
			if _, err := conn.Write(p); err != nil {
				t.Fatal(err)
			}
			want = append(want, p...)
		}
	}
	got := <-read
	if !bytes.Equal(got, want) {
		t.Fatalf("client read % x\nwant         % x", got, want)
	}
	// Idle gate: an acknowledgement goes straight through.
	p := encodedAck(t, packets.Puback, 200)
	go func() { _, _ = conn.Write(p) }()
	got = make([]byte, len(p))
	_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(client, got); err != nil || !bytes.Equal(got, p) {
		t.Fatalf("idle gate: read % x, %v", got, err)
	}
}

// TestAckGateFailedPublishClosesUnacknowledged: when JetStream refuses a message, its acknowledgement and every
// later one are never sent and the connection is closed, so the client sends them again.
func TestAckGateFailedPublishClosesUnacknowledged(t *testing.T) {
	nodes := startSolo(t)
	conn, g, client := gatedPipe(t)
	// A subject no stream covers: JetStream answers "no responders", a real failed ack.
	r, err := nodes[0].pub.publish(&nats.Msg{Subject: "not-idmq.x", Data: []byte("x")}, true)
	if err != nil {
		t.Fatal(err)
	}
	g.expect(1, &Ack{r: r, topic: "x"})
	ok, err := nodes[0].PublishAsync(&Message{Topic: "gate/ok", QoS: 1})
	if err != nil {
		t.Fatal(err)
	}
	g.expect(2, ok)
	for _, pid := range []uint16{1, 2} {
		if _, err := conn.Write(encodedAck(t, packets.Puback, pid)); err != nil {
			t.Fatal(err)
		}
	}
	_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := client.Read(make([]byte, 16))
	if err == nil || n > 0 {
		t.Fatalf("client read %d bytes (%v); want the connection closed with nothing acknowledged", n, err)
	}
}

func TestAckPacketID(t *testing.T) {
	for _, pid := range []uint16{1, 255, 256, 65535} {
		for _, typ := range []byte{packets.Puback, packets.Pubrec} {
			if got, ok := ackPacketID(encodedAck(t, typ, pid)); !ok || got != pid {
				t.Errorf("type %d pid %d: read %d %v", typ, pid, got, ok)
			}
		}
	}
	if _, ok := ackPacketID([]byte{0x40, 0x02, 0x00}); ok {
		t.Error("a truncated PUBACK has no packet id")
	}
}

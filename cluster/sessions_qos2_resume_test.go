package cluster

import (
	"bufio"
	"context"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/idmq/idmq/internal/testkit/wire"
)

// qos2Receiver is a raw MQTT 5 client that receives QoS 2 as the spec's receiver does (MQTT 5, 4.3.3, method
// B): it delivers a PUBLISH and keeps its packet id until the PUBREL; a PUBLISH with a kept id is not delivered
// again. Its session state (the kept ids) outlives its connections. The test decides which acks it sends.
type qos2Receiver struct {
	t         *testing.T
	id        string
	conn      net.Conn
	r         *bufio.Reader
	kept      map[uint16]string // ids delivered and not released
	delivered []string          // payloads in the order delivered
	ids       map[string]uint16 // payload -> packet id of its first delivery
	dupAgain  map[uint16]bool   // ids the server sent again with DUP set, while kept
	pubrels   map[uint16]bool   // ids the server sent a PUBREL for
}

func newQoS2Receiver(t *testing.T, id string) *qos2Receiver {
	return &qos2Receiver{t: t, id: id, kept: map[uint16]string{}, ids: map[string]uint16{},
		dupAgain: map[uint16]bool{}, pubrels: map[uint16]bool{}}
}

func (c *qos2Receiver) write(pk packets.Packet) {
	c.t.Helper()
	pk.ProtocolVersion = 5
	if err := wire.WritePacket(c.conn, &pk); err != nil {
		c.t.Fatal(err)
	}
}

// next returns the next packet within d; false if none came or the connection ended.
func (c *qos2Receiver) next(d time.Duration) (packets.Packet, bool) {
	_ = c.conn.SetReadDeadline(time.Now().Add(d))
	pk, err := wire.ReadPacket(c.r, 5)
	return pk, err == nil
}

// connect connects to addr (retrying for up to 20s: a node refuses clients while the cluster elects leaders
// after a node's death) and reports Session Present.
func (c *qos2Receiver) connect(addr string, clean bool) bool {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			c.t.Fatal(err)
		}
		c.conn, c.r = conn, bufio.NewReader(conn)
		c.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect},
			Connect:    packets.ConnectParams{ProtocolName: []byte("MQTT"), ClientIdentifier: c.id, Keepalive: 60, Clean: clean},
			Properties: packets.Properties{SessionExpiryInterval: 3600, SessionExpiryIntervalFlag: true}})
		pk, ok := c.next(5 * time.Second)
		if ok && pk.FixedHeader.Type == packets.Connack && pk.ReasonCode == 0 {
			c.t.Cleanup(func() { conn.Close() })
			return pk.SessionPresent
		}
		conn.Close()
		if time.Now().After(deadline) {
			c.t.Fatalf("%s: not connected to %s: %+v", c.id, addr, pk)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (c *qos2Receiver) subscribe(filter string) {
	c.t.Helper()
	c.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: filter, Qos: 2}}})
	if pk, ok := c.next(5 * time.Second); !ok || pk.FixedHeader.Type != packets.Suback || pk.ReasonCodes[0] != 2 {
		c.t.Fatalf("no SUBACK granting QoS 2: %+v", pk)
	}
}

// receive handles one PUBLISH (delivering it unless its id is kept) and returns its id and whether it was
// delivered; it sends no acknowledgement.
func (c *qos2Receiver) receive(pk packets.Packet) (uint16, bool) {
	c.t.Helper()
	if pk.FixedHeader.Qos != 2 {
		c.t.Fatalf("%q arrived at QoS %d", pk.Payload, pk.FixedHeader.Qos)
	}
	if _, ok := c.kept[pk.PacketID]; ok {
		if !pk.FixedHeader.Dup {
			c.t.Fatalf("PUBLISH %q reuses kept packet id %d without DUP", pk.Payload, pk.PacketID)
		}
		c.dupAgain[pk.PacketID] = true
		return pk.PacketID, false
	}
	c.kept[pk.PacketID] = string(pk.Payload)
	c.delivered = append(c.delivered, string(pk.Payload))
	if _, ok := c.ids[string(pk.Payload)]; !ok {
		c.ids[string(pk.Payload)] = pk.PacketID
	}
	return pk.PacketID, true
}

func (c *qos2Receiver) ack(typ byte, id uint16) {
	c.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: typ, Qos: map[byte]byte{packets.Pubrel: 1}[typ]}, PacketID: id})
}

// serve answers as a compliant receiver (PUBREC every PUBLISH, PUBCOMP every PUBREL) until quiet passes with
// nothing, or within.
func (c *qos2Receiver) serve(within, quiet time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		pk, ok := c.next(quiet)
		if !ok {
			return
		}
		switch pk.FixedHeader.Type {
		case packets.Publish:
			id, _ := c.receive(pk)
			c.ack(packets.Pubrec, id)
		case packets.Pubrel:
			c.pubrels[pk.PacketID] = true
			delete(c.kept, pk.PacketID)
			c.ack(packets.Pubcomp, pk.PacketID)
		}
	}
}

// TestSessionQoS2ExactlyOnceAfterNodeDeath: a persistent session's node dies with QoS 2 deliveries at every
// stage (completed though the cursor was not stored, PUBREC'd but not completed, received but not PUBREC'd),
// from a publisher on the dead node and on another; the session resumes on a survivor. No QoS 2 message is
// delivered twice and none is lost: the received ones come again with their packet id and DUP set, the
// PUBREC'd ones get their PUBREL, the completed ones do not come again.
func TestSessionQoS2ExactlyOnceAfterNodeDeath(t *testing.T) {
	nodes, _ := startCluster(t, 3)
	mA, _ := sessionNode(t, nodes[0])
	mB, _ := sessionNode(t, nodes[1])

	rc := newQoS2Receiver(t, "q2-mover")
	rc.connect(mA.TCP, true)
	rc.subscribe("q2/#")
	pubA, _ := persistentClient(t, mA.TCP, "q2-pub-a", true)
	pubB, _ := persistentClient(t, mB.TCP, "q2-pub-b", true)
	publish := func(c interface {
		Publish(context.Context, *paho.Publish) (*paho.PublishResponse, error)
	}, payloads ...string) {
		t.Helper()
		for _, p := range payloads {
			if _, err := c.Publish(context.Background(), &paho.Publish{Topic: "q2/" + p, QoS: 2, Payload: []byte(p)}); err != nil {
				t.Fatalf("publish %s: %v", p, err)
			}
		}
	}
	// "a…" from A (delivered locally: no stream sequence known), "b…" from B (routed).
	publish(pubB, "b-done")
	publish(pubA, "a-done")
	publish(pubB, "b-released")
	publish(pubA, "a-released")
	publish(pubB, "b-received")
	publish(pubA, "a-received")
	byPayload := map[string]uint16{}
	for len(byPayload) < 6 {
		pk, ok := rc.next(10 * time.Second)
		if !ok {
			t.Fatalf("only %d of 6 messages arrived on A", len(byPayload))
		}
		if pk.FixedHeader.Type == packets.Publish {
			id, _ := rc.receive(pk)
			byPayload[string(pk.Payload)] = id
		}
	}
	// The window is never empty from here on, so the cursor stays before all six.
	for _, p := range []string{"b-done", "a-done", "b-released", "a-released"} {
		rc.ack(packets.Pubrec, byPayload[p])
	}
	for released := 0; released < 4; {
		pk, ok := rc.next(10 * time.Second)
		if !ok {
			t.Fatalf("%d of 4 PUBRELs arrived", released)
		}
		if pk.FixedHeader.Type != packets.Pubrel {
			continue
		}
		released++
		delete(rc.kept, pk.PacketID)
		if pk.PacketID == byPayload["b-done"] || pk.PacketID == byPayload["a-done"] {
			rc.ack(packets.Pubcomp, pk.PacketID) // the others' PUBCOMP is "lost" with the node
		}
	}
	time.Sleep(200 * time.Millisecond) // the PUBCOMPs reach A

	nodes[0].srv.Shutdown() // A dies: nothing it would write from here on reaches the cluster
	rc.conn.Close()
	// While the stream elects a leader in A's place B refuses publishes by closing the publisher's connection
	// (a client then sends again); this publisher does not reconnect, so it waits for the election.
	eventually(t, 20*time.Second, "a stream leader after A's death", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := nodes[1].b.stream.Info(ctx)
		return err == nil
	})
	publish(pubB, "b-offline")

	if !rc.connect(mB.TCP, false) {
		t.Fatal("CONNACK on B: session present = false, want true")
	}
	publish(pubB, "b-live")
	rc.serve(30*time.Second, 3*time.Second)

	want := []string{"a-done", "a-received", "a-released", "b-done", "b-live", "b-offline", "b-received", "b-released"}
	got := slices.Clone(rc.delivered)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("delivered %v, want each of %v once", rc.delivered, want)
	}
	for _, p := range []string{"a-received", "b-received"} {
		if !rc.dupAgain[byPayload[p]] {
			t.Errorf("%s was not sent again with its packet id %d and DUP", p, byPayload[p])
		}
	}
	for _, p := range []string{"a-released", "b-released"} {
		if !rc.pubrels[byPayload[p]] {
			t.Errorf("%s: no PUBREL for packet id %d after the resume", p, byPayload[p])
		}
	}
}

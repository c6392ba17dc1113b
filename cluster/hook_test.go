package cluster

import (
	"bufio"
	"context"
	"net"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/idmq/idmq/internal/testkit/wire"
	"github.com/idmq/idmq/mochifix"
)

// mochiNode is a mochi server wired to a cluster node by a Hook. Test-only: mochi's allow-all auth hook stands
// in for idmq's (the broker's e2e tests run the real ones).
func mochiNode(t *testing.T, c *Cluster) (*mqtt.Server, *Hook) {
	t.Helper()
	s := mqtt.New(&mqtt.Options{InlineClient: true})
	if err := s.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	h := NewHook(c, s, HookOptions{})
	if err := s.AddHook(h, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(); err != nil {
		t.Fatal(err)
	}
	if err := h.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Stop(); _ = s.Close() })
	return s, h
}

type inbox struct {
	mu  sync.Mutex
	got []packets.Packet
}

func (b *inbox) subscribe(t *testing.T, s *mqtt.Server, filter string, id int) {
	t.Helper()
	err := s.Subscribe(filter, id, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		b.mu.Lock()
		b.got = append(b.got, pk)
		b.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (b *inbox) all() []packets.Packet {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]packets.Packet(nil), b.got...)
}

// TestHookRoutesWithPropertiesOnce: a publish on node A reaches node B's subscriber once, with its MQTT 5
// properties and its publisher as origin; A's own subscriber gets it once (nothing comes back from B).
func TestHookRoutesWithPropertiesOnce(t *testing.T) {
	nodes, _ := startCluster(t, 2)
	sA, _ := mochiNode(t, nodes[0])
	sB, _ := mochiNode(t, nodes[1])
	var atA, atB inbox
	atA.subscribe(t, sA, "t/#", 1)
	atB.subscribe(t, sB, "t/#", 1)

	pub := sA.NewClient(nil, "local", "publisher-1", true)
	pub.Properties.ProtocolVersion = 5
	topic := "t/a.b/ /é/*/>"
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		TopicName:   topic, Payload: []byte("hello"), PacketID: 1,
		Properties: packets.Properties{ContentType: "text/plain", ResponseTopic: "t/reply", CorrelationData: []byte{1, 2},
			MessageExpiryInterval: 60, PayloadFormat: 1, PayloadFormatFlag: true,
			User: []packets.UserProperty{{Key: "k", Val: "v1"}, {Key: "k", Val: "v2"}}},
	}
	if err := sA.InjectPacket(pub, pk); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "delivery on B", func() bool { return len(atB.all()) > 0 })
	time.Sleep(500 * time.Millisecond) // a duplicate or a loop would arrive meanwhile
	gotA, gotB := atA.all(), atB.all()
	if len(gotA) != 1 || len(gotB) != 1 {
		t.Fatalf("deliveries: A %d, B %d; want 1 each", len(gotA), len(gotB))
	}
	g := gotB[0]
	p := g.Properties
	if g.TopicName != topic || string(g.Payload) != "hello" || g.Origin != "publisher-1" || g.FixedHeader.Qos != 1 {
		t.Fatalf("B got topic %q payload %q origin %q qos %d", g.TopicName, g.Payload, g.Origin, g.FixedHeader.Qos)
	}
	if p.ContentType != "text/plain" || p.ResponseTopic != "t/reply" || string(p.CorrelationData) != "\x01\x02" ||
		!p.PayloadFormatFlag || p.PayloadFormat != 1 || p.MessageExpiryInterval == 0 || p.MessageExpiryInterval > 60 ||
		len(p.User) != 2 || p.User[1].Val != "v2" {
		t.Fatalf("properties lost on the way: %+v", p)
	}
}

// TestHookRetainedReachesLateNode: a retained publish on A is in B's retained store, and in that of a mochi
// server whose hook starts later; clearing it clears it everywhere.
func TestHookRetainedReachesLateNode(t *testing.T) {
	nodes, _ := startCluster(t, 2)
	sA, _ := mochiNode(t, nodes[0])
	sB, _ := mochiNode(t, nodes[1])
	if err := sA.Publish("r/status", []byte("on"), true, 1); err != nil {
		t.Fatal(err)
	}
	retained := func(s *mqtt.Server) string {
		for _, pk := range s.Topics.Messages("r/status") {
			return string(pk.Payload)
		}
		return ""
	}
	eventually(t, 10*time.Second, "retained on B", func() bool { return retained(sB) == "on" })
	late, _ := mochiNode(t, nodes[1]) // a node (re)started later: Start loads the bucket before returning
	if got := retained(late); got != "on" {
		t.Fatalf("late node's retained = %q", got)
	}
	if err := sB.Publish("r/status", nil, true, 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "cleared on A", func() bool { return retained(sA) == "" && retained(late) == "" })
}

func TestPacketOfExpiry(t *testing.T) {
	now := time.Unix(1000, 0)
	tests := []struct {
		name    string
		expiry  uint32
		age     time.Duration
		ok      bool
		remains uint32
	}{
		{"no expiry", 0, time.Hour, true, 0},
		{"time left", 60, 20 * time.Second, true, 40},
		{"expired on the way", 10, 10 * time.Second, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pk, ok := packetOf(&Message{Topic: "x", MessageExpiry: tt.expiry, Created: now.Add(-tt.age)}, now)
			if ok != tt.ok || (ok && pk.Properties.MessageExpiryInterval != tt.remains) {
				t.Fatalf("ok %v expiry %d; want %v %d", ok, pk.Properties.MessageExpiryInterval, tt.ok, tt.remains)
			}
		})
	}
}

// TestHookGateBehindMochifixListener: behind mochifix's Listener (the Receive Maximum window around the
// CoalescingConn) the ack gate is installed, and a QoS 1 publish that reuses the packet id of a delivery the
// client has not acknowledged (mochifix gives it another id inside mochi) gets its PUBACK with the client's
// id, promptly: the gate expects the id the client sent, not mochi's.
func TestHookGateBehindMochifixListener(t *testing.T) {
	nodes := startSolo(t)
	s := mqtt.New(&mqtt.Options{InlineClient: true})
	h := NewHook(nodes[0], s, HookOptions{})
	f, err := mochifix.Add(s, mochifix.Options{Hooks: []mqtt.Hook{new(auth.AllowHook), h}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddListener(f.Listener(listeners.NewNet("tcp", ln), mochifix.ListenerOptions{Coalesce: true})); err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(); err != nil {
		t.Fatal(err)
	}
	if err := h.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := f.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Stop(); _ = mochifix.CloseServer(s) })

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	send := func(pk packets.Packet) {
		t.Helper()
		pk.ProtocolVersion = 5
		if err := wire.WritePacket(c, &pk); err != nil {
			t.Fatal(err)
		}
	}
	next := func(want byte) packets.Packet {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		pk, err := wire.ReadPacket(r, 5)
		if err != nil || pk.FixedHeader.Type != want {
			t.Fatalf("packet type %d (%v), want %d", pk.FixedHeader.Type, err, want)
		}
		return pk
	}
	send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), ClientIdentifier: "both-ways", Keepalive: 60, Clean: true}})
	next(packets.Connack)
	send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: "down", Qos: 1}}})
	next(packets.Suback)
	if err := s.Publish("down", []byte("delivery"), false, 1); err != nil {
		t.Fatal(err)
	}
	delivery := next(packets.Publish) // left unacknowledged
	send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: delivery.PacketID,
		TopicName: "up", Payload: []byte("own publish")})
	if ack := next(packets.Puback); ack.PacketID != delivery.PacketID || ack.ReasonCode != 0 {
		t.Fatalf("PUBACK id %d code %#x, want id %d code 0", ack.PacketID, ack.ReasonCode, delivery.PacketID)
	}
	gated := false
	h.gates.Range(func(any, any) bool { gated = true; return false })
	if !gated {
		t.Error("no ack gate installed: the client's connection was not recognised as a CoalescingConn")
	}
}

package mochifix

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/idmq/idmq/internal/testkit/wire"
)

// rawV5 is a raw MQTT 5 client: it acknowledges only when the test says so.
type rawV5 struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

// next returns the next packet within d; ok is false if none came.
func (c *rawV5) next(d time.Duration) (pk packets.Packet, ok bool) {
	c.t.Helper()
	_ = c.c.SetReadDeadline(time.Now().Add(d))
	if _, err := c.r.Peek(1); err != nil {
		return pk, false
	}
	return readPacket(c.t, c.c, c.r, 5), true
}

func (c *rawV5) write(pk packets.Packet) {
	c.t.Helper()
	pk.ProtocolVersion = 5
	if err := wire.WritePacket(c.c, &pk); err != nil {
		c.t.Fatal(err)
	}
}

func startWithFixes(t *testing.T, caps *mqtt.Capabilities) (*mqtt.Server, string) {
	t.Helper()
	s := mqtt.New(&mqtt.Options{Logger: quietLog(), Capabilities: caps, InlineClient: true})
	return s, serveWithFixes(t, s, Options{Hooks: []mqtt.Hook{new(auth.AllowHook)}})
}

// serveWithFixes adds the fixes with o to s, listens on a loopback port through the fixes' listener, serves
// and starts them; the server closes when the test ends. It returns the listener's address.
func serveWithFixes(t *testing.T, s *mqtt.Server, o Options) string {
	t.Helper()
	_, addr := serveFixes(t, s, o)
	return addr
}

// serveFixes is serveWithFixes returning the Fixes too.
func serveFixes(t *testing.T, s *mqtt.Server, o Options) (*Fixes, string) {
	t.Helper()
	f, err := Add(s, o)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddListener(f.Listener(listeners.NewNet("tcp", ln), ListenerOptions{})); err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(); err != nil {
		t.Fatal(err)
	}
	if err := f.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = CloseServer(s) })
	return f, ln.Addr().String()
}

// subscribeV5 connects a raw v5 client announcing receiveMax and subscribes it to filter at QoS 1.
func subscribeV5(t *testing.T, addr, id string, receiveMax uint16, filter string) *rawV5 {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &rawV5{t: t, c: conn, r: bufio.NewReader(conn)}
	c.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect:    packets.ConnectParams{ProtocolName: []byte("MQTT"), ClientIdentifier: id, Keepalive: 60, Clean: true},
		Properties: packets.Properties{ReceiveMaximum: receiveMax}})
	if pk, ok := c.next(5 * time.Second); !ok || pk.FixedHeader.Type != packets.Connack {
		t.Fatalf("no CONNACK: %+v", pk.FixedHeader)
	}
	c.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: filter, Qos: 1}}})
	if pk, ok := c.next(5 * time.Second); !ok || pk.FixedHeader.Type != packets.Suback {
		t.Fatalf("no SUBACK: %+v", pk.FixedHeader)
	}
	return c
}

// TestReceiveMaximumHoldsDeliveries: a client that announced Receive Maximum 2 never has more than 2
// unacknowledged QoS 1 PUBLISHes [MQTT-3.3.4-9]; each PUBACK lets exactly one more through
// [MQTT-4.9.0-2], and every message arrives, in order.
func TestReceiveMaximumHoldsDeliveries(t *testing.T) {
	const total, receiveMax = 10, 2
	s, addr := startWithFixes(t, nil)
	sub := subscribeV5(t, addr, "small-window", receiveMax, "rm/#")
	for i := range total {
		if err := s.Publish("rm/x", []byte(fmt.Sprint(i)), false, 1); err != nil {
			t.Fatal(err)
		}
	}
	var unacked []uint16
	got := 0
	expect := func(n int) {
		t.Helper()
		for range n {
			pk, ok := sub.next(5 * time.Second)
			if !ok || pk.FixedHeader.Type != packets.Publish {
				t.Fatalf("message %d did not arrive (got %+v)", got, pk.FixedHeader)
			}
			if string(pk.Payload) != fmt.Sprint(got) {
				t.Fatalf("message %q arrived as number %d", pk.Payload, got)
			}
			got++
			unacked = append(unacked, pk.PacketID)
		}
		if pk, ok := sub.next(300 * time.Millisecond); ok {
			t.Fatalf("a PUBLISH beyond Receive Maximum %d: %d unacknowledged, then %+v", receiveMax, len(unacked), pk.FixedHeader)
		}
	}
	ack := func() {
		sub.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: unacked[0]})
		unacked = unacked[1:]
	}
	expect(receiveMax)
	for got < total {
		ack()
		expect(1)
	}
}

// TestPublishHeaderReadsWhatMochiEncodes: length, QoS and packet id of packets encoded by mochi's own
// codec, for topics of every length class, and nothing from a packet cut short.
func TestPublishHeaderReadsWhatMochiEncodes(t *testing.T) {
	for _, topicLen := range []int{1, 2, 3, 255, 256, 300, 70000 / 2} {
		for _, qos := range []byte{0, 1, 2} {
			pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos}, ProtocolVersion: 5,
				TopicName: strings.Repeat("t", topicLen), PacketID: 0x1234, Payload: []byte("x")}
			var buf bytes.Buffer
			if err := pk.PublishEncode(&buf); err != nil {
				t.Fatal(err)
			}
			b := append(buf.Bytes(), 0xd0, 0x00) // a PINGRESP after it
			n, id, gotQos := publishHeader(b)
			wantID := uint16(0x1234)
			if qos == 0 {
				wantID = 0
			}
			if n != buf.Len() || id != wantID || gotQos != qos {
				t.Errorf("topic %d bytes QoS %d: n=%d id=%#x qos=%d, want n=%d id=%#x qos=%d", topicLen, qos, n, id, gotQos, buf.Len(), wantID, qos)
			}
			if n, _, _ := publishHeader(buf.Bytes()[:buf.Len()-1]); n != 0 {
				t.Errorf("topic %d bytes: a cut packet read as %d bytes", topicLen, n)
			}
		}
	}
}

// discardConn is a connection whose writes cost nothing, so a benchmark sees only the wrapper.
type discardConn struct{ net.Conn }

func (discardConn) Write(p []byte) (int, error) { return len(p), nil }

// BenchmarkWindowConnWrite: what the Receive Maximum fix adds to each write mochi makes. "bare" is the
// connection without the wrapper (before the fix), "untracked" a client whose Receive Maximum is at
// least max_inflight (paho.golang's default 65,535: the fan-in and fan-out benchmarks), "tracked" a
// client with Receive Maximum 32 acknowledging each message, as a window-32 subscriber does.
func BenchmarkWindowConnWrite(b *testing.B) {
	var buf bytes.Buffer
	for i := range 8 { // a write batch of 8 QoS 1 PUBLISHes, 64-byte payloads
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, ProtocolVersion: 5,
			TopicName: "bench/fan/out", PacketID: uint16(i + 1), Payload: make([]byte, 64)}
		if err := pk.PublishEncode(&buf); err != nil {
			b.Fatal(err)
		}
	}
	batch := buf.Bytes()
	b.Run("bare", func(b *testing.B) {
		var c net.Conn = discardConn{}
		b.SetBytes(int64(len(batch)))
		for range b.N {
			_, _ = c.Write(batch)
		}
	})
	b.Run("untracked", func(b *testing.B) {
		c := newWindowConn(discardConn{})
		b.SetBytes(int64(len(batch)))
		for range b.N {
			_, _ = c.Write(batch)
		}
	})
	b.Run("tracked", func(b *testing.B) {
		c := newWindowConn(discardConn{})
		c.limit.Store(32)
		b.SetBytes(int64(len(batch)))
		for range b.N {
			_, _ = c.Write(batch)
			for id := uint16(1); id <= 8; id++ {
				_ = c.acknowledged(id)
			}
		}
	})
}

// TestBackpressureWindowIsTheReceiveMaximum: a subscriber's window for the backpressure fix is its Receive
// Maximum when that is smaller than max_inflight: a publisher to a subscriber with Receive Maximum 4 that
// acknowledges nothing is held (one wait), while one to a subscriber without a Receive Maximum is not.
func TestBackpressureWindowIsTheReceiveMaximum(t *testing.T) {
	const wait = 400 * time.Millisecond
	for _, tc := range []struct {
		receiveMax uint16
		held       bool
	}{{4, true}, {0, false}} {
		s := mqtt.New(&mqtt.Options{Logger: quietLog()})
		addr := serveWithFixes(t, s, Options{Hooks: []mqtt.Hook{new(auth.AllowHook)}, SlowSubscriberWait: wait})
		subscribeV5(t, addr, "window", tc.receiveMax, "bp") // never acknowledges
		pub := subscribeV5(t, addr, "publisher", 0, "unused")
		start := time.Now()
		for i := range 8 {
			pub.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: uint16(i + 1),
				TopicName: "bp", Payload: []byte("m")})
			pub.expectType(packets.Puback)
		}
		if took := time.Since(start); (took >= wait*3/4) != tc.held {
			t.Errorf("Receive Maximum %d: 8 publishes took %v; held for the subscriber: want %v", tc.receiveMax, took, tc.held)
		}
	}
}

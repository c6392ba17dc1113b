package testkit

import (
	"bufio"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/idmq/idmq/internal/wsconn"

	"github.com/idmq/idmq/internal/testkit/wire"
)

// A message published by a 3.1.1 client over TCP reaches an MQTT 5 client over WebSocket and a raw client.
func TestMochiCarriesMessagesAcrossClients(t *testing.T) {
	m := StartMochi(t, MochiOptions{WebSocket: true}, new(auth.AllowHook))

	ws, _, err := websocket.DefaultDialer.Dial("ws://"+m.WS+"/mqtt", nil)
	if err != nil {
		t.Fatal(err)
	}
	v5, ca, err := ConnectV5(t, wsconn.New(ws), &paho.Connect{ClientID: "v5", CleanStart: true})
	if err != nil || ca.ReasonCode != 0 {
		t.Fatalf("v5 connect: %v %+v", err, ca)
	}
	if code := v5.SubscribeQoS1(t, "news/#"); code != 1 {
		t.Fatalf("SUBACK 0x%02X, want QoS 1 granted", code)
	}

	raw := DialTCP(t, m.TCP)
	defer raw.Close()
	r := bufio.NewReader(raw)
	for _, pk := range []*packets.Packet{
		{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
			Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30, ClientIdentifier: "raw"}},
		{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, ProtocolVersion: 4, PacketID: 7,
			Filters: packets.Subscriptions{{Filter: "news/#", Qos: 1}}},
	} {
		if err := wire.WritePacket(raw, pk); err != nil {
			t.Fatal(err)
		}
	}
	_ = raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	for _, want := range []byte{packets.Connack, packets.Suback} {
		pk, err := wire.ReadPacket(r, 4)
		if err != nil || pk.FixedHeader.Type != want || pk.ReasonCode != 0 {
			t.Fatalf("read type %d code 0x%02X (%v), want type %d accepted", pk.FixedHeader.Type, pk.ReasonCode, err, want)
		}
	}

	v3, code, err := ConnectV3(t, V3Options("tcp://"+m.TCP, "v3", "", ""))
	if err != nil || code != 0 {
		t.Fatalf("v3 connect: code %d, %v", code, err)
	}
	if tok := v3.Publish("news/today", 1, false, "hello"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	if p := v5.Expect(t, "news/today", 5*time.Second); string(p.Payload) != "hello" {
		t.Fatalf("v5 received %q", p.Payload)
	}
	pk, err := wire.ReadPacket(r, 4)
	if err != nil || pk.FixedHeader.Type != packets.Publish || pk.TopicName != "news/today" || string(pk.Payload) != "hello" {
		t.Fatalf("raw client read type %d %q %q: %v", pk.FixedHeader.Type, pk.TopicName, pk.Payload, err)
	}
}

func TestMochiWithoutHooksRefuses(t *testing.T) {
	m := StartMochi(t, MochiOptions{})
	if _, code, err := ConnectV3(t, V3Options("tcp://"+m.TCP, "nobody", "", "")); err == nil || code == 0 {
		t.Fatalf("connected to a broker with no auth hook: code %d", code)
	}
	c, ca, err := ConnectV5(t, DialTCP(t, m.TCP), &paho.Connect{ClientID: "nobody", CleanStart: true})
	if err == nil || ca == nil || ca.ReasonCode < 0x80 {
		t.Fatalf("v5 CONNACK %+v, %v; want a refusal", ca, err)
	}
	if _, err := c.Conn.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read on a refused client's connection: %v, want it closed", err)
	}
}

func TestMochiTLS(t *testing.T) {
	ca := NewCA(t)
	m := StartMochi(t, MochiOptions{TLS: ca.ServerTLS(t)}, new(auth.AllowHook))
	if _, err := tls.Dial("tcp", m.TCP, NewCA(t).ClientTLS()); err == nil {
		t.Fatal("a client trusting another CA completed the handshake")
	}
	conn, err := tls.Dial("tcp", m.TCP, ca.ClientTLS())
	if err != nil {
		t.Fatal(err)
	}
	if _, ca, err := ConnectV5(t, conn, &paho.Connect{ClientID: "tls", CleanStart: true}); err != nil || ca.ReasonCode != 0 {
		t.Fatalf("connect over TLS: %v %+v", err, ca)
	}
}

// NoDisconnect passes while the server keeps the client and fails once it has sent a DISCONNECT, which
// NextDisconnect returns with its arrival time; NextDisconnect fails when none comes.
func TestV5ClientDisconnects(t *testing.T) {
	m := StartMochi(t, MochiOptions{}, new(auth.AllowHook))
	c, ca, err := ConnectV5(t, DialTCP(t, m.TCP), &paho.Connect{ClientID: "kicked", CleanStart: true})
	if err != nil || ca.ReasonCode != 0 {
		t.Fatalf("connect: %v %+v", err, ca)
	}
	c.NoDisconnect(t, 0)
	c.NoDisconnect(t, 20*time.Millisecond)
	r := &fatalRecorder{TB: t}
	if c.NextDisconnect(r, 20*time.Millisecond); r.msg != "no DISCONNECT within 20ms" {
		t.Fatalf("NextDisconnect without a DISCONNECT: failure %q", r.msg)
	}

	cl, _ := m.Server.Clients.Get("kicked")
	before := time.Now()
	_ = m.Server.DisconnectClient(cl, packets.ErrAdministrativeAction) // returns the code it sent
	if d := c.NextDisconnect(t, 5*time.Second); d.ReasonCode != 0x98 || d.At.Before(before) {
		t.Fatalf("DISCONNECT 0x%02X at %s, want 0x98 after %s", d.ReasonCode, d.At, before)
	}
	c.Disconnects <- Disconnect{Disconnect: &paho.Disconnect{ReasonCode: 0x8E}, At: time.Now()}
	r = &fatalRecorder{TB: t}
	if c.NoDisconnect(r, 0); !strings.Contains(r.msg, "DISCONNECT 0x8E") {
		t.Fatalf("NoDisconnect after a DISCONNECT: failure %q", r.msg)
	}
}

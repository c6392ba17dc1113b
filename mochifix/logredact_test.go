package mochifix

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/idmq/idmq/internal/testkit/wire"
)

// connectAndDeny accepts every CONNECT and denies publishing to one topic.
type connectAndDeny struct {
	mqtt.HookBase
	topic string
}

func (h *connectAndDeny) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}
func (h *connectAndDeny) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }
func (h *connectAndDeny) OnACLCheck(_ *mqtt.Client, topic string, write bool) bool {
	return !write || topic != h.topic
}

type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestLoggerRedactsPackets: the lines mochi writes about a denied 3.1.1 publish (warn) and a publish a
// hook rejected (debug) name the topic and the payload's size, never the payload.
func TestLoggerRedactsPackets(t *testing.T) {
	const secret = "patient-42-heart-rate"
	logs := &logBuffer{}
	s := mqtt.New(&mqtt.Options{Logger: Logger(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))})
	for _, h := range []mqtt.Hook{&connectAndDeny{topic: "denied"}, &rejectTopic{topic: "rejected"}} {
		if err := s.AddHook(h, nil); err != nil {
			t.Fatal(err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddListener(Listener(listeners.NewNet("tcp", ln), s, ListenerOptions{})); err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = CloseServer(s) })

	publish := func(id, topic string) {
		c := dialConnect(t, ln.Addr().String(), id, true)
		if typ, err := readType(c, 5*time.Second); typ != packets.Connack {
			t.Fatalf("%s: packet type %d (%v), want CONNACK", id, typ, err)
		}
		if err := wire.WritePacket(c, &packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
			ProtocolVersion: 4, PacketID: 7, TopicName: topic, Payload: []byte(secret)}); err != nil {
			t.Fatal(err)
		}
	}
	publish("rejected-by-hook", "rejected")
	waitFor(t, func() bool { return strings.Contains(logs.String(), "publish packet rejected") }, "mochi's rejection line")

	publish("denied-v3", "denied")
	waitFor(t, func() bool { return strings.Contains(logs.String(), "error processing packet") }, "mochi's denial line")

	out := logs.String()
	// mochi prints a payload as text or as its bytes in decimal ("[112 97 ...]").
	asBytes := strings.Trim(fmt.Sprint([]byte(secret)), "[]")
	if strings.Contains(out, secret) || strings.Contains(out, asBytes) {
		t.Fatalf("a payload reached the log:\n%s", out)
	}
	for _, want := range []string{"pk.topic=denied", "packet.topic=rejected", "payload_bytes=21", "pk.type=Publish"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

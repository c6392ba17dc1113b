package mochifix

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"github.com/mochi-mqtt/server/v2/packets"
)

// rejectTopic refuses publishes to one topic, as an ACL or a validation hook of the embedder would.
type rejectTopic struct {
	mqtt.HookBase
	topic string
}

func (h *rejectTopic) Provides(b byte) bool { return b == mqtt.OnPublish }

func (h *rejectTopic) OnPublish(_ *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.TopicName == h.topic {
		return pk, packets.ErrRejectPacket
	}
	return pk, nil
}

// TestAddRefusesALogItCannotReplay: a log needs a store to replay into and, among Options.Hooks, the ACL
// that replay asks (without one it would silently deliver nothing).
func TestAddRefusesALogItCannotReplay(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"no store", Options{Hooks: []mqtt.Hook{new(auth.AllowHook)}}},
		{"no ACL hook", Options{Store: new(bolt.Hook), StoreConfig: &bolt.Options{Path: filepath.Join(t.TempDir(), "idmq.db")}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.WALPath = filepath.Join(t.TempDir(), "wal")
			if _, err := Add(mqtt.New(&mqtt.Options{Logger: quietLog()}), tc.opts); err == nil {
				t.Fatal("accepted")
			}
			if _, err := os.Stat(tc.opts.WALPath); err == nil {
				t.Error("the log file was created anyway")
			}
		})
	}
}

// TestAddLogsOnlyWhatTheHooksAccepted: the embedder's hooks run before the log, so a publish one of them
// refuses is never logged (and so never replayed after a restart); an accepted one is logged and done.
func TestAddLogsOnlyWhatTheHooksAccepted(t *testing.T) {
	dir := t.TempDir()
	walPath := filepath.Join(dir, "wal")
	s := mqtt.New(&mqtt.Options{Logger: quietLog()})
	f, err := Add(s, Options{
		Hooks:       []mqtt.Hook{new(auth.AllowHook), &rejectTopic{topic: "refused"}},
		Store:       new(bolt.Hook),
		StoreConfig: &bolt.Options{Path: filepath.Join(dir, "idmq.db")},
		WALPath:     walPath,
	})
	if err != nil {
		t.Fatal(err)
	}
	conn, peer := net.Pipe()
	go io.Copy(io.Discard, peer)
	defer conn.Close()
	pub := s.NewClient(conn, "t", "pub", false)
	pub.Properties.ProtocolVersion = 4
	pub.State.Inflight.ResetReceiveQuota(16)
	go pub.WriteLoop()
	before := f.store.wal.writes.Load()
	for i, topic := range []string{"refused", "accepted"} {
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: topic, Payload: []byte("m"), PacketID: uint16(i + 1)}
		if err := s.InjectPacket(pub, pk); err != nil {
			t.Fatal(err)
		}
	}
	if n := f.store.wal.writes.Load() - before; n != 2 {
		t.Errorf("%d log records, want 2 (pending and done of the accepted publish)", n)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, pending := openTestWAL(t, walPath, 0); len(pending) != 0 {
		t.Fatalf("%d records pending after the publishes: %+v", len(pending), pending[0].msg)
	}
}

// TestAddThatFailsReleasesTheLog: a store that cannot open fails Add with a StoreError and leaves the
// log's file unlocked.
func TestAddThatFailsReleasesTheLog(t *testing.T) {
	dir := t.TempDir()
	walPath := filepath.Join(dir, "wal")
	s := mqtt.New(&mqtt.Options{Logger: quietLog()})
	_, err := Add(s, Options{Hooks: []mqtt.Hook{new(auth.AllowHook)}, Store: new(bolt.Hook), StoreConfig: &bolt.Options{Path: dir}, WALPath: walPath})
	var se *StoreError
	if !errors.As(err, &se) {
		t.Fatalf("Add = %v, want a StoreError", err)
	}
	f, err := os.OpenFile(walPath, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatalf("the log is still locked: %v", err)
	}
}

// TestQoS1BurstFitsTheOutboundQueue: with an outbound queue (16) smaller than the in-flight window (64), a
// burst of QoS 1 publishes reaches a subscriber that acknowledges as fast as it reads, every message: the
// backpressure window is bounded by the queue too. mochi drops a QoS 1 delivery that finds the queue full
// and deletes its in-flight record after the publisher had its PUBACK, so without the bound some are lost.
func TestQoS1BurstFitsTheOutboundQueue(t *testing.T) {
	const total = 2000
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumClientWritesPending = 16
	caps.MaximumInflight = 64
	s := mqtt.New(&mqtt.Options{Logger: quietLog(), Capabilities: caps})
	addr := serveWithFixes(t, s, Options{Hooks: []mqtt.Hook{new(auth.AllowHook)}, SlowSubscriberWait: 5 * time.Second})
	sub := subscribeV5(t, addr, "reader", 0, "burst")
	pub := subscribeV5(t, addr, "burster", 0, "unused")
	var burst bytes.Buffer
	for i := range total {
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, ProtocolVersion: 5,
			PacketID: uint16(i + 1), TopicName: "burst", Payload: []byte(strconv.Itoa(i))}
		if err := pk.PublishEncode(&burst); err != nil {
			t.Fatal(err)
		}
	}
	go func() { _, _ = pub.c.Write(burst.Bytes()) }()
	go func() { // the publisher's PUBACKs, read so that its connection never blocks the server's writer
		for {
			if _, ok := pub.next(10 * time.Second); !ok {
				return
			}
		}
	}()
	seen := map[string]bool{}
	for len(seen) < total {
		pk, ok := sub.next(5 * time.Second)
		if !ok {
			break
		}
		if pk.FixedHeader.Type != packets.Publish {
			continue
		}
		seen[string(pk.Payload)] = true
		sub.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
	}
	if len(seen) != total {
		t.Fatalf("%d of %d acknowledged QoS 1 messages delivered (%d counted dropped)", len(seen), total, s.Info.MessagesDropped)
	}
}

// TestHeldInlinePublisherWaits: an inline client registered with HoldInline (a cluster node handing on other
// nodes' messages) injects a burst of QoS 1 messages much larger than the subscriber's window; every one
// arrives, because the injection waits while the subscriber is behind. Unregistered, mochi drops the overflow.
func TestHeldInlinePublisherWaits(t *testing.T) {
	const total = 2000
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumClientWritesPending = 16
	caps.MaximumInflight = 64
	s := mqtt.New(&mqtt.Options{Logger: quietLog(), Capabilities: caps})
	f, addr := serveFixes(t, s, Options{Hooks: []mqtt.Hook{new(auth.AllowHook)}, SlowSubscriberWait: 5 * time.Second})
	router := s.NewClient(nil, "local", "router", true)
	router.Properties.ProtocolVersion = 5
	f.HoldInline(router)
	sub := subscribeV5(t, addr, "reader", 1, "routed")
	go func() {
		for i := range total {
			pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 1,
				TopicName: "routed", Payload: []byte(strconv.Itoa(i))}
			if err := s.InjectPacket(router, pk); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	seen := map[string]bool{}
	for len(seen) < total {
		pk, ok := sub.next(5 * time.Second)
		if !ok {
			break
		}
		if pk.FixedHeader.Type != packets.Publish {
			continue
		}
		seen[string(pk.Payload)] = true
		sub.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
	}
	if len(seen) != total {
		t.Fatalf("%d of %d injected QoS 1 messages delivered (%d counted dropped, %d in-flight dropped)", len(seen), total,
			s.Info.MessagesDropped, s.Info.InflightDropped)
	}
}

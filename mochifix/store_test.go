package mochifix

import (
	"bufio"
	"bytes"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/idmq/idmq/internal/testkit/wire"
)

func openTestBolt(t *testing.T, wal *walLog) *store {
	t.Helper()
	h := &store{Hook: new(bolt.Hook), wal: wal}
	h.SetOpts(quietLog(), nil)
	if err := h.Init(&bolt.Options{Path: filepath.Join(t.TempDir(), "idmq.db")}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Stop() })
	return h
}

// TestStoreKeepsPubrelState: once a subscriber's PUBREC is read, the store holds the PUBREL state, so a
// restart resends PUBREL and not the PUBLISH the subscriber may already have released.
func TestStoreKeepsPubrelState(t *testing.T) {
	for _, tc := range []struct {
		name     string
		pubrec   packets.Packet
		wantType byte
	}{
		{"accepted PUBREC", packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: 3}, packets.Pubrel},
		{"refused PUBREC (mochi drops the message)", packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: 3, ReasonCode: packets.ErrUnspecifiedError.Code}, packets.Publish},
		{"PUBREC for an unknown packet id", packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: 4}, packets.Publish},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := openTestBolt(t, nil)
			cl := mqtt.New(&mqtt.Options{Logger: quietLog()}).NewClient(nil, "t", "sub", false)
			out := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2}, PacketID: 3, TopicName: "t/x", Payload: []byte("m"), Origin: "pub", Created: 100}
			cl.State.Inflight.Set(out)
			h.OnQosPublish(cl, out, out.Created, 0)
			if _, err := h.OnPacketRead(cl, tc.pubrec); err != nil {
				t.Fatal(err)
			}
			msgs, err := h.StoredInflightMessages()
			if err != nil {
				t.Fatal(err)
			}
			if len(msgs) != 1 || msgs[0].PacketID != 3 || msgs[0].FixedHeader.Type != tc.wantType {
				t.Fatalf("stored in-flight = %+v, want one message of type %d with packet id 3", msgs, tc.wantType)
			}
		})
	}
}

// recordingStore is a store that notes what the write-ahead log held when it was asked to write.
type recordingStore struct {
	mqtt.HookBase
	wal     *walLog
	id      uint64
	atWrite []string
}

func (s *recordingStore) Provides(b byte) bool { return b == mqtt.OnQosPublish }

func (s *recordingStore) OnQosPublish(cl *mqtt.Client, pk packets.Packet, _ int64, _ int) {
	e := s.wal.entries[s.id]
	_, queue := e.queue[cl.ID]
	s.atWrite = append(s.atWrite, map[[2]bool]string{
		{false, false}: "nothing", {true, false}: "queue", {true, true}: "queue+queued", {false, true}: "queued",
	}[[2]bool{queue, e.queued[cl.ID]}])
}

// TestStoreMarkersBracketTheStoreWrite: the queue record is written before the store writes a
// subscriber's copy and queued after it; other copies (resends, other messages) get no records.
func TestStoreMarkersBracketTheStoreWrite(t *testing.T) {
	w, _ := openTestWAL(t, filepath.Join(t.TempDir(), walFileName), 0)
	rec := &recordingStore{wal: w}
	h := &store{Hook: rec, wal: w}
	pub := walTestClient("pub")
	pk := walTestPacket("pub", "t/x", "m", 1)
	rec.id, _ = w.appendPending(pub, pk)
	sub := walTestClient("sub")

	out := pk.Copy(false)
	out.PacketID = 5
	h.OnQosPublish(sub, out, out.Created, 0)
	if len(rec.atWrite) != 1 || rec.atWrite[0] != "queue" {
		t.Fatalf("log at the store write: %v, want [queue]", rec.atWrite)
	}
	if e := w.entries[rec.id]; !e.queued["sub"] || e.queue["sub"] != 5 {
		t.Fatalf("after the store write: queue %v queued %v", e.queue, e.queued)
	}

	before := w.writes.Load()
	resend := out
	resend.FixedHeader.Dup = true
	h.OnQosPublish(walTestClient("other"), resend, out.Created, 0)
	other := walTestPacket("pub", "t/x", "another message", 1)
	h.OnQosPublish(walTestClient("other"), other, other.Created, 0)
	if n := w.writes.Load() - before; n != 0 {
		t.Errorf("%d log records for a resend and a copy of another message, want 0", n)
	}
	if len(rec.atWrite) != 3 {
		t.Errorf("the store wrote %d copies, want 3", len(rec.atWrite))
	}
}

// droppedRecorder is a store that counts the in-flight deletes it is asked for.
type droppedRecorder struct {
	mqtt.HookBase
	mu      sync.Mutex
	dropped int
}

func (r *droppedRecorder) Provides(b byte) bool { return b == mqtt.OnQosDropped }

func (r *droppedRecorder) OnQosDropped(*mqtt.Client, packets.Packet) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dropped++
}

func (r *droppedRecorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dropped
}

// TestStoreKeepsQueueAcrossSessionTakeover: resuming a session from a new connection must not delete the
// stored in-flight messages the new connection now holds; a clean start still deletes them.
func TestStoreKeepsQueueAcrossSessionTakeover(t *testing.T) {
	rec := &droppedRecorder{}
	s := mqtt.New(&mqtt.Options{Logger: quietLog(), InlineClient: true})
	if err := s.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	if err := s.AddHook(&store{Hook: rec}, nil); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.EstablishConnection("t", c)
		}
	}()
	connect := func(clean bool) net.Conn {
		t.Helper()
		c := dialConnect(t, ln.Addr().String(), "sub", clean)
		readUntil(t, c, packets.Connack)
		return c
	}

	first := connect(false)
	if err := wire.WritePacket(first, &packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, ProtocolVersion: 4,
		PacketID: 1, Filters: packets.Subscriptions{{Filter: "t/#", Qos: 1}}}); err != nil {
		t.Fatal(err)
	}
	readUntil(t, first, packets.Suback)
	for i := range 3 {
		if err := s.Publish("t/x", []byte{byte(i)}, false, 1); err != nil {
			t.Fatal(err)
		}
	}
	connect(false) // resumes: the three unacknowledged messages move to this connection
	if n := rec.count(); n != 0 {
		t.Fatalf("resuming the session deleted %d stored in-flight messages, want 0", n)
	}
	connect(true) // a clean start discards them
	if n := rec.count(); n != 3 {
		t.Fatalf("a clean start deleted %d stored in-flight messages, want 3", n)
	}
}

// readUntil reads MQTT 3.1.1 packets until one of type typ, within 5 s.
func readUntil(t *testing.T, c net.Conn, typ byte) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	for {
		pk, err := wire.ReadPacket(r, 4)
		if err != nil {
			t.Fatal(err)
		}
		if pk.FixedHeader.Type == typ {
			return
		}
	}
}

// TestStoreRestoresPacketIDs: an in-flight message loaded from the store keeps its packet id, which mochi's
// bolt record leaves out (it would be resent with id 0 and refused).
func TestStoreRestoresPacketIDs(t *testing.T) {
	h := openTestBolt(t, nil)
	cl := mqtt.New(&mqtt.Options{Logger: quietLog()}).NewClient(nil, "t", "sub", false)
	for _, id := range []uint16{1, 300, 65535} {
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: id, TopicName: "t/x", Payload: []byte("m"), Created: 100}
		h.OnQosPublish(cl, pk, pk.Created, 0)
	}
	raw, err := h.Hook.StoredInflightMessages()
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) == 0 || raw[0].PacketID != 0 {
		t.Fatalf("mochi's bolt hook now stores packet ids (%+v): packetid.go can go", raw)
	}
	msgs, err := h.StoredInflightMessages()
	if err != nil {
		t.Fatal(err)
	}
	var got []uint16
	for _, m := range msgs {
		got = append(got, m.PacketID)
	}
	slices.Sort(got)
	if !slices.Equal(got, []uint16{1, 300, 65535}) {
		t.Fatalf("restored packet ids %v, want [1 300 65535]", got)
	}
}

// TestStoreWritesEmptySysInfo: reading the server-info record of a new store, as mochi's Serve does, logs
// no "key not found" error.
func TestStoreWritesEmptySysInfo(t *testing.T) {
	var logs bytes.Buffer
	h := &store{Hook: new(bolt.Hook)}
	h.SetOpts(slog.New(slog.NewTextHandler(&logs, nil)), nil)
	if err := h.Init(&bolt.Options{Path: filepath.Join(t.TempDir(), "idmq.db")}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Stop() })
	if _, err := h.StoredSysInfo(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Fatalf("reading the server-info record of a new store logged an error:\n%s", logs.String())
	}
}

package broker

import (
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.etcd.io/bbolt"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func openTestWAL(t *testing.T, path string, compactAt int64) (*walLog, []*walEntry) {
	t.Helper()
	w, pending, err := openWALLog(path, compactAt, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.close() })
	return w, pending
}

// publisher returns a client standing for a publisher's connection.
func walTestClient(id string) *mqtt.Client {
	cl := mqtt.New(&mqtt.Options{Logger: quietLog()}).NewClient(nil, "t", id, false)
	return cl
}

func walTestPacket(origin, topic, payload string, qos byte) packets.Packet {
	return packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos},
		TopicName:   topic, Payload: []byte(payload), Origin: origin, PacketID: 7,
		Created: time.Now().Unix(), ProtocolVersion: 5,
		Properties: packets.Properties{
			ContentType: "text/plain", ResponseTopic: "r/1", CorrelationData: []byte{1, 2},
			PayloadFormat: 1, PayloadFormatFlag: true, MessageExpiryInterval: 60,
			User: []packets.UserProperty{{Key: "k", Val: "v"}},
		},
	}
}

func pendingIDs(es []*walEntry) []uint64 {
	var ids []uint64
	for _, e := range es {
		ids = append(ids, e.id)
	}
	return ids
}

// TestWALRecordsSurviveReopen: a pending record comes back with every field replay needs, its markers
// included; a done record does not come back.
func TestWALRecordsSurviveReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), walFileName)
	w, _ := openTestWAL(t, path, 0)
	pubA, pubB := walTestClient("pub-a"), walTestClient("pub-b")
	pkA := walTestPacket("pub-a", "t/a", "payload-a", 2)
	pkA.FixedHeader.Retain = true
	idA, err := w.appendPending(pubA, pkA)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.appendMarker(walQueue, idA, "sub-1", 3); err != nil {
		t.Fatal(err)
	}
	if err := w.appendMarker(walQueued, idA, "sub-1", 3); err != nil {
		t.Fatal(err)
	}
	if err := w.appendMarker(walQueue, idA, "sub-2", 9); err != nil {
		t.Fatal(err)
	}
	if _, err := w.appendPending(pubB, walTestPacket("pub-b", "t/b", "payload-b", 1)); err != nil {
		t.Fatal(err)
	}
	if err := w.finish(pubB); err != nil {
		t.Fatal(err)
	}
	w.close()

	_, pending := openTestWAL(t, path, 0)
	if len(pending) != 1 || pending[0].id != idA {
		t.Fatalf("pending after reopen = %v, want [%d]", pendingIDs(pending), idA)
	}
	e := pending[0]
	got, want := e.msg.packet(), pkA
	want.PacketID = 0 // the publisher's id is kept apart, in PubPacketID
	if got.TopicName != want.TopicName || string(got.Payload) != string(want.Payload) || got.Origin != want.Origin ||
		got.FixedHeader.Qos != 2 || !got.FixedHeader.Retain || got.Created != want.Created || got.ProtocolVersion != 5 ||
		e.msg.PubPacketID != 7 {
		t.Errorf("message after reopen = %+v, want %+v", got, want)
	}
	p := got.Properties
	if p.ContentType != "text/plain" || p.ResponseTopic != "r/1" || string(p.CorrelationData) != "\x01\x02" ||
		p.PayloadFormat != 1 || !p.PayloadFormatFlag || p.MessageExpiryInterval != 60 ||
		len(p.User) != 1 || p.User[0] != (packets.UserProperty{Key: "k", Val: "v"}) {
		t.Errorf("properties after reopen = %+v", p)
	}
	if !e.queued["sub-1"] || e.queue["sub-1"] != 3 || e.queued["sub-2"] || e.queue["sub-2"] != 9 {
		t.Errorf("markers after reopen: queue %v queued %v", e.queue, e.queued)
	}
}

// TestWALTornTail: whatever the process was writing when it died is dropped, the records before it are
// kept, and the log appends cleanly after it.
func TestWALTornTail(t *testing.T) {
	for _, tc := range []struct {
		name string
		// tear damages the log; last is the offset of its last record.
		tear     func(t *testing.T, path string, last int64)
		lastKept bool
	}{
		{"cut in the header", func(t *testing.T, path string, last int64) { truncateTo(t, path, last+3) }, false},
		{"cut in the body", func(t *testing.T, path string, last int64) { truncateTo(t, path, fileSize(t, path)-2) }, false},
		{"bit flip in the body", func(t *testing.T, path string, last int64) { flipByte(t, path, fileSize(t, path)-1) }, false},
		{"length beyond the bound", func(t *testing.T, path string, last int64) {
			var hdr [4]byte
			binary.BigEndian.PutUint32(hdr[:], walMaxRecord+1)
			writeAt(t, path, hdr[:], last)
		}, false},
		{"zeros after the last record", func(t *testing.T, path string, last int64) {
			writeAt(t, path, make([]byte, 64), fileSize(t, path))
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), walFileName)
			w, _ := openTestWAL(t, path, 0)
			keep, _ := w.appendPending(walTestClient("p1"), walTestPacket("p1", "t/1", "kept", 1))
			last := w.size
			lastID, _ := w.appendPending(walTestClient("p2"), walTestPacket("p2", "t/2", "maybe torn", 1))
			w.close()
			tc.tear(t, path, last)

			w2, pending := openTestWAL(t, path, 0)
			want := []uint64{keep}
			if tc.lastKept {
				want = append(want, lastID)
			}
			if !slices.Equal(pendingIDs(pending), want) {
				t.Fatalf("pending after a torn tail = %v, want %v", pendingIDs(pending), want)
			}
			// New records follow the good ones and read back.
			next, err := w2.appendPending(walTestClient("p3"), walTestPacket("p3", "t/3", "after", 1))
			if err != nil {
				t.Fatal(err)
			}
			w2.close()
			_, pending = openTestWAL(t, path, 0)
			if got := pendingIDs(pending); !slices.Equal(got, append(want, next)) {
				t.Fatalf("after appending past the torn tail, pending = %v, want %v", got, append(want, next))
			}
		})
	}
}

func writeAt(t *testing.T, path string, b []byte, off int64) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func fileSize(t *testing.T, path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

func truncateTo(t *testing.T, path string, n int64) {
	if err := os.Truncate(path, n); err != nil {
		t.Fatal(err)
	}
}

func flipByte(t *testing.T, path string, off int64) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	f.ReadAt(b, off)
	b[0] ^= 0x40
	f.WriteAt(b, off)
}

// TestWALCorruptRecordRefusesToOpen: a record whose CRC matches but that does not decode is not a torn
// write; the broker refuses to start rather than replay garbage or silently drop what follows.
func TestWALCorruptRecordRefusesToOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), walFileName)
	w, _ := openTestWAL(t, path, 0)
	w.mu.Lock()
	_, err := w.writeLocked(walPending, 1, func(b []byte) []byte { return append(b, 0xff) }) // truncated fields
	w.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	w.close()
	if _, _, err := openWALLog(path, 0, quietLog()); err == nil {
		t.Fatal("a corrupt record opened without error")
	}
}

// TestWALSecondOpenRefused: two processes on one data_dir must not both truncate and append the log.
func TestWALSecondOpenRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), walFileName)
	openTestWAL(t, path, 0)
	if _, _, err := openWALLog(path, 0, quietLog()); err == nil {
		t.Fatal("a second open of a log in use succeeded")
	}
}

// TestWALCompaction: finished publishes do not grow the file past the bound; pending ones and their
// markers survive each rewrite.
func TestWALCompaction(t *testing.T) {
	path := filepath.Join(t.TempDir(), walFileName)
	const bound = 4 << 10
	w, _ := openTestWAL(t, path, bound)
	stuck := walTestClient("stuck")
	stuckID, _ := w.appendPending(stuck, walTestPacket("stuck", "t/s", "never finished", 2))
	w.appendMarker(walQueue, stuckID, "sub", 5)
	w.appendMarker(walQueued, stuckID, "sub", 5)
	pub := walTestClient("busy")
	maxSize := int64(0)
	for i := range 2000 {
		id, err := w.appendPending(pub, walTestPacket("busy", "t/b", fmt.Sprintf("message %d", i), 1))
		if err != nil {
			t.Fatal(err)
		}
		w.appendMarker(walQueue, id, "sub", 1)
		w.appendMarker(walQueued, id, "sub", 1)
		if err := w.finish(pub); err != nil {
			t.Fatal(err)
		}
		maxSize = max(maxSize, fileSize(t, path))
	}
	// One publish's records can land on top of the bound before the next done compacts.
	if maxSize > bound+1024 {
		t.Errorf("log grew to %d bytes with a %d byte bound", maxSize, bound)
	}
	w.close()
	_, pending := openTestWAL(t, path, bound)
	if len(pending) != 1 || pending[0].id != stuckID || !pending[0].queued["sub"] || pending[0].queue["sub"] != 5 {
		t.Fatalf("after compactions pending = %v, want only %d with its markers", pendingIDs(pending), stuckID)
	}
}

// TestWALCompactionWithManyPending: a log whose pending records alone exceed the bound does not rewrite
// itself on every record.
func TestWALCompactionWithManyPending(t *testing.T) {
	path := filepath.Join(t.TempDir(), walFileName)
	const bound = 1 << 10
	w, _ := openTestWAL(t, path, bound)
	for i := range 100 {
		w.appendPending(walTestClient(fmt.Sprintf("p%d", i)), walTestPacket("x", "t/x", "0123456789012345678901234567890123456789", 1))
	}
	pub := walTestClient("busy")
	before := w.writes.Load()
	for range 200 {
		w.appendPending(pub, walTestPacket("busy", "t/b", "m", 1))
		w.finish(pub)
	}
	if w.compactions > 3 {
		t.Errorf("%d compactions for 200 publishes beside %d bytes of pending records: the bound was not raised", w.compactions, w.size)
	}
	if got := w.writes.Load() - before; got != 400 {
		t.Errorf("%d records written, want 400", got)
	}
}

// TestWALAbandonedBounded: publishes whose connection died before the fan-out are kept for replay, but
// never more than walMaxAbandoned of them.
func TestWALAbandonedBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), walFileName)
	w, _ := openTestWAL(t, path, 0)
	var first uint64
	for i := range walMaxAbandoned + 5 {
		cl := walTestClient("p")
		id, err := w.appendPending(cl, walTestPacket("p", "t/a", "m", 1))
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = id
		}
		w.abandon(cl)
	}
	if len(w.entries) != walMaxAbandoned {
		t.Fatalf("%d abandoned records kept, want %d", len(w.entries), walMaxAbandoned)
	}
	if _, ok := w.entries[first]; ok {
		t.Error("the oldest abandoned record was kept, a newer one dropped")
	}
}

// TestWALInProgressMatch: only a subscriber's new copy of the publish in progress gets markers.
func TestWALInProgressMatch(t *testing.T) {
	w, _ := openTestWAL(t, filepath.Join(t.TempDir(), walFileName), 0)
	pub := walTestClient("pub")
	id, _ := w.appendPending(pub, walTestPacket("pub", "t/1", "hello", 1))
	for _, tc := range []struct {
		name string
		pk   packets.Packet
		want bool
	}{
		{"its copy", walTestPacket("pub", "t/1", "hello", 1), true},
		{"its copy with the topic replaced by an alias", walTestPacket("pub", "", "hello", 1), true},
		{"another origin", walTestPacket("other", "t/1", "hello", 1), false},
		{"same origin, another payload (an older retained message)", walTestPacket("pub", "t/1", "bye", 1), false},
		{"same origin, another topic", walTestPacket("pub", "t/2", "hello", 1), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := w.inProgressFor(tc.pk)
			if ok != tc.want || (ok && got != id) {
				t.Errorf("inProgressFor = %d, %v; want %v", got, ok, tc.want)
			}
		})
	}
	w.finish(pub)
	if _, ok := w.inProgressFor(walTestPacket("pub", "t/1", "hello", 1)); ok {
		t.Error("a finished publish still matches")
	}
}

// replayFixture is a mochi server in the state Serve leaves it after restoring a store: offline sessions
// with their subscriptions and in-flight messages, no listener.
type replayFixture struct {
	server    *mqtt.Server
	persisted map[string][]packets.Packet
	denied    map[string]bool
}

func newReplayFixture(t *testing.T) *replayFixture {
	t.Helper()
	return &replayFixture{server: mqtt.New(&mqtt.Options{Logger: quietLog()}), persisted: map[string][]packets.Packet{}, denied: map[string]bool{}}
}

func (f *replayFixture) session(id string, version byte, subs ...packets.Subscription) *mqtt.Client {
	cl := f.server.NewClient(nil, "t", id, false)
	cl.Properties.ProtocolVersion = version
	cl.Stop(packets.ErrServerShuttingDown)
	f.server.Clients.Add(cl)
	for _, sub := range subs {
		f.server.Topics.Subscribe(id, sub)
		cl.State.Subscriptions.Add(sub.Filter, sub)
	}
	return cl
}

func (f *replayFixture) replay(t *testing.T, w *walLog, pending []*walEntry) walReplayStats {
	t.Helper()
	r := &walReplay{
		server:  f.server,
		persist: func(cl *mqtt.Client, pk packets.Packet) { f.persisted[cl.ID] = append(f.persisted[cl.ID], pk) },
		canRead: func(cl *mqtt.Client, _ string) bool { return !f.denied[cl.ID] },
		now:     time.Now,
		log:     quietLog(),
	}
	st, err := r.run(w, pending)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestWALReplay: each pending record reaches the restored sessions that do not hold it, with mochi's
// delivery rules, and only those.
func TestWALReplay(t *testing.T) {
	type delivered map[string]byte // client -> QoS of its replayed copy
	for _, tc := range []struct {
		name string
		msg  packets.Packet
		// setup adds what the store and the log held for the record at the crash.
		setup func(f *replayFixture, w *walLog, id uint64)
		want  delivered
	}{
		{
			name: "not yet fanned out: every subscriber, at the lower of message and subscription QoS",
			msg:  walTestPacket("pub", "t/x", "m", 2),
			want: delivered{"s1": 2, "s2": 1},
		},
		{
			name: "queued marker: the store had the copy, no replay",
			msg:  walTestPacket("pub", "t/x", "m", 2),
			setup: func(f *replayFixture, w *walLog, id uint64) {
				w.appendMarker(walQueue, id, "s1", 4)
				w.appendMarker(walQueued, id, "s1", 4)
			},
			want: delivered{"s2": 1},
		},
		{
			name: "queue marker and the restored in-flight copy: died after the store write, no replay",
			msg:  walTestPacket("pub", "t/x", "m", 2),
			setup: func(f *replayFixture, w *walLog, id uint64) {
				w.appendMarker(walQueue, id, "s1", 4)
				cl, _ := f.server.Clients.Get("s1")
				cl.State.Inflight.Set(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2}, PacketID: 4, TopicName: "t/x", Payload: []byte("m")})
			},
			want: delivered{"s2": 1},
		},
		{
			name: "queue marker without the copy: died before the store write, replay",
			msg:  walTestPacket("pub", "t/x", "m", 2),
			setup: func(f *replayFixture, w *walLog, id uint64) {
				w.appendMarker(walQueue, id, "s1", 4)
			},
			want: delivered{"s1": 2, "s2": 1},
		},
		{
			name: "queue marker, another message under that packet id: replay",
			msg:  walTestPacket("pub", "t/x", "m", 2),
			setup: func(f *replayFixture, w *walLog, id uint64) {
				w.appendMarker(walQueue, id, "s1", 4)
				cl, _ := f.server.Clients.Get("s1")
				cl.State.Inflight.Set(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2}, PacketID: 4, TopicName: "t/x", Payload: []byte("other")})
			},
			want: delivered{"s1": 2, "s2": 1},
		},
		{
			name: "NoLocal subscription of the publisher itself",
			msg:  walTestPacket("s1", "t/x", "m", 1),
			want: delivered{"s2": 1},
		},
		{
			name: "ACL no longer allows the subscriber",
			msg:  walTestPacket("pub", "t/x", "m", 1),
			setup: func(f *replayFixture, w *walLog, id uint64) {
				f.denied["s2"] = true
			},
			want: delivered{"s1": 1},
		},
		{
			name: "QoS 0 subscription: dropped for an offline session, as mochi does",
			msg:  walTestPacket("pub", "q/0", "m", 1),
			want: delivered{},
		},
		{
			name: "expired message",
			msg: func() packets.Packet {
				pk := walTestPacket("pub", "t/x", "m", 1)
				pk.Expiry = time.Now().Add(-time.Minute).Unix()
				return pk
			}(),
			want: delivered{},
		},
		{
			name: "QoS 2 from a restored publisher session without its PUBREC: never acknowledged, the publisher resends",
			msg:  walTestPacket("pubsess", "t/x", "m", 2),
			setup: func(f *replayFixture, w *walLog, id uint64) {
				f.session("pubsess", 4)
			},
			want: delivered{},
		},
		{
			name: "QoS 2 from a restored publisher session with its PUBREC: acknowledged, replay",
			msg:  walTestPacket("pubsess", "t/x", "m", 2),
			setup: func(f *replayFixture, w *walLog, id uint64) {
				pub := f.session("pubsess", 4)
				pub.State.Inflight.Set(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: 7})
			},
			want: delivered{"s1": 2, "s2": 1},
		},
		{
			name: "abandoned QoS 2 publish whose publisher completed it on a later connection: replay",
			msg:  walTestPacket("pubsess", "t/x", "m", 2),
			setup: func(f *replayFixture, w *walLog, id uint64) {
				f.session("pubsess", 4)
				w.abandon(w.entries[id].publisher)
			},
			want: delivered{"s1": 2, "s2": 1},
		},
		{
			name: "shared group already served by one member",
			msg:  walTestPacket("pub", "g/x", "m", 1),
			setup: func(f *replayFixture, w *walLog, id uint64) {
				w.appendMarker(walQueued, id, "g1", 2)
			},
			want: delivered{},
		},
		{
			name: "shared group not served: one member",
			msg:  walTestPacket("pub", "g/x", "m", 1),
			want: delivered{"g?": 1},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newReplayFixture(t)
			f.session("s1", 4, packets.Subscription{Filter: "t/#", Qos: 2, NoLocal: true})
			f.session("s2", 5, packets.Subscription{Filter: "t/+", Qos: 1, RetainAsPublished: true, Identifier: 11})
			f.session("s3", 4, packets.Subscription{Filter: "q/0", Qos: 0})
			f.session("g1", 4, packets.Subscription{Filter: "$share/g/g/#", Qos: 1})
			f.session("g2", 4, packets.Subscription{Filter: "$share/g/g/#", Qos: 1})
			path := filepath.Join(t.TempDir(), walFileName)
			w, _ := openTestWAL(t, path, 0)
			pub := walTestClient(tc.msg.Origin)
			id, _ := w.appendPending(pub, tc.msg)
			if tc.setup != nil {
				tc.setup(f, w, id)
			}
			w.close()

			w, pending := openTestWAL(t, path, 0)
			f.replay(t, w, pending)
			got := delivered{}
			for client, pks := range f.persisted {
				if len(pks) != 1 {
					t.Fatalf("%s got %d copies", client, len(pks))
				}
				if client == "g1" || client == "g2" {
					client = "g?"
				}
				got[client] = pks[0].FixedHeader.Qos
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("replayed to %v, want %v", got, tc.want)
			}
			// Each persisted copy is also the session's in-flight message, under a fresh packet id.
			for client, pks := range f.persisted {
				cl, _ := f.server.Clients.Get(client)
				if in, ok := cl.State.Inflight.Get(pks[0].PacketID); !ok || pks[0].PacketID == 0 || string(in.Payload) != "m" {
					t.Errorf("%s: in-flight %d = %+v, %v", client, pks[0].PacketID, in, ok)
				}
			}
			// The log is empty afterwards: a second restart replays nothing.
			w.close()
			if _, pending := openTestWAL(t, path, 0); len(pending) != 0 {
				t.Errorf("%d records pending after replay", len(pending))
			}
		})
	}
}

// TestWALReplayDeliveryRules: retain flag, subscription identifiers and properties as publishToClient sets them.
func TestWALReplayDeliveryRules(t *testing.T) {
	f := newReplayFixture(t)
	f.session("v3", 4, packets.Subscription{Filter: "t/#", Qos: 1})
	f.session("v5rap", 5, packets.Subscription{Filter: "t/#", Qos: 1, RetainAsPublished: true, Identifier: 11})
	f.session("v5", 5, packets.Subscription{Filter: "t/#", Qos: 1})
	path := filepath.Join(t.TempDir(), walFileName)
	w, _ := openTestWAL(t, path, 0)
	pk := walTestPacket("pub", "t/x", "m", 1)
	pk.FixedHeader.Retain = true
	w.appendPending(walTestClient("pub"), pk)
	w.close()
	w, pending := openTestWAL(t, path, 0)
	f.replay(t, w, pending)
	for _, tc := range []struct {
		client string
		retain bool
		ids    []int
	}{
		{"v3", false, nil},         // [MQTT-3.3.1-9] for 3.1.1
		{"v5rap", true, []int{11}}, // Retain As Published, with the subscription identifier
		{"v5", false, nil},         // [MQTT-3.3.1-12]
	} {
		t.Run(tc.client, func(t *testing.T) {
			got := f.persisted[tc.client]
			if len(got) != 1 {
				t.Fatalf("%d copies", len(got))
			}
			out := got[0]
			// mochi lists "no identifier" as 0, which it never encodes.
			ids := slices.DeleteFunc(slices.Clone(out.Properties.SubscriptionIdentifier), func(id int) bool { return id == 0 })
			if out.FixedHeader.Retain != tc.retain || !slices.Equal(ids, tc.ids) {
				t.Errorf("retain %v ids %v, want %v %v", out.FixedHeader.Retain, ids, tc.retain, tc.ids)
			}
			if out.Origin != "pub" || out.Properties.ContentType != "text/plain" || len(out.Properties.User) != 1 || out.Created != pk.Created {
				t.Errorf("copy lost the publish's origin or properties: %+v", out)
			}
		})
	}
}

// BenchmarkQoS1PublishWAL measures what the write-ahead log adds to one QoS 1 publish through mochi's
// processPublish with the bolt store: the publisher's PUBACK, one persistent subscriber's in-flight copy
// and that subscriber's PUBACK. Each iteration publishes once on a broker without the log and once on one
// with it, alternately, so both see the same machine load; it reports both times and their ratio.
// "nosync" runs bolt without fsync, which leaves only CPU cost and so shows the log's share at its largest.
func BenchmarkQoS1PublishWAL(b *testing.B) {
	for _, store := range []string{"bolt", "bolt-nosync"} {
		b.Run(store, func(b *testing.B) {
			noSync := store == "bolt-nosync"
			base, wal := newBenchBroker(b, noSync, false), newBenchBroker(b, noSync, true)
			var tBase, tWAL time.Duration
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				t0 := time.Now()
				base.publish(b, i)
				t1 := time.Now()
				wal.publish(b, i)
				tWAL += time.Since(t1)
				tBase += t1.Sub(t0)
			}
			b.StopTimer()
			b.ReportMetric(float64(tBase.Nanoseconds())/float64(b.N), "ns/publish-without-wal")
			b.ReportMetric(float64(tWAL.Nanoseconds())/float64(b.N), "ns/publish-with-wal")
			b.ReportMetric(float64(tWAL)/float64(tBase), "ratio")
			if len(wal.wal.entries) != 0 {
				b.Fatalf("%d records still pending after the run", len(wal.wal.entries))
			}
		})
	}
}

// BenchmarkWALRecords is the log's own cost per publish to one subscriber: pending, queue, queued, done.
func BenchmarkWALRecords(b *testing.B) {
	w, _, err := openWALLog(filepath.Join(b.TempDir(), walFileName), 0, quietLog())
	if err != nil {
		b.Fatal(err)
	}
	defer w.close()
	pub := walTestClient("pub")
	pk := walTestPacket("pub", "bench/t", string(make([]byte, 256)), 1)
	b.ReportAllocs()
	for b.Loop() {
		id, err := w.appendPending(pub, pk)
		if err != nil {
			b.Fatal(err)
		}
		w.appendMarker(walQueue, id, "sub", 1)
		w.appendMarker(walQueued, id, "sub", 1)
		if err := w.finish(pub); err != nil {
			b.Fatal(err)
		}
	}
}

type benchBroker struct {
	server   *mqtt.Server
	pub, sub *mqtt.Client
	wal      *walLog
	payload  []byte
}

func newBenchBroker(b *testing.B, noSync, withWAL bool) *benchBroker {
	dir := b.TempDir()
	s := mqtt.New(&mqtt.Options{Logger: quietLog()})
	if err := s.AddHook(new(auth.AllowHook), nil); err != nil {
		b.Fatal(err)
	}
	bb := &benchBroker{server: s, payload: make([]byte, 256)}
	if withWAL {
		var err error
		if bb.wal, _, err = openWALLog(filepath.Join(dir, walFileName), 0, quietLog()); err != nil {
			b.Fatal(err)
		}
	}
	store := storageFixes{Hook: new(bolt.Hook), wal: bb.wal}
	if err := s.AddHook(store, &bolt.Options{Path: filepath.Join(dir, "idmq.db"), Options: &bbolt.Options{NoSync: noSync}}); err != nil {
		b.Fatal(err)
	}
	if withWAL {
		if err := s.AddHook(&walHook{wal: bb.wal}, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.Cleanup(func() { s.Close() })

	bb.sub = s.NewClient(nil, "t", "sub", false)
	bb.sub.Properties.ProtocolVersion = 4
	s.Clients.Add(bb.sub)
	s.Topics.Subscribe("sub", packets.Subscription{Filter: "bench/#", Qos: 1})

	conn, peer := net.Pipe()
	go io.Copy(io.Discard, peer)
	b.Cleanup(func() { conn.Close() })
	bb.pub = s.NewClient(conn, "t", "pub", false)
	bb.pub.Properties.ProtocolVersion = 4
	bb.pub.State.Inflight.ResetReceiveQuota(1024)
	go bb.pub.WriteLoop()
	return bb
}

func (bb *benchBroker) publish(b *testing.B, i int) {
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		TopicName:   "bench/t", Payload: bb.payload, PacketID: uint16(i%65000 + 1),
	}
	if err := bb.server.InjectPacket(bb.pub, pk); err != nil {
		b.Fatal(err)
	}
	// The subscriber acknowledges its copy, as an online one would, so its store stays small.
	for _, in := range bb.sub.State.Inflight.GetAll(false) {
		if err := bb.server.InjectPacket(bb.sub, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: in.PacketID}); err != nil {
			b.Fatal(err)
		}
	}
}

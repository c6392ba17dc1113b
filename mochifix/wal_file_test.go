package mochifix

import (
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// walFileName is the log's name in the tests' temporary directories.
const walFileName = "idmq-wal.log"

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

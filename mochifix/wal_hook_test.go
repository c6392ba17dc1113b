package mochifix

import (
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.etcd.io/bbolt"
)

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
	if err := s.AddHook(&store{Hook: new(bolt.Hook), wal: bb.wal}, &bolt.Options{Path: filepath.Join(dir, "idmq.db"), Options: &bbolt.Options{NoSync: noSync}}); err != nil {
		b.Fatal(err)
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

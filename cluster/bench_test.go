package cluster

import (
	"context"
	"slices"
	"testing"
	"time"
)

// Publish cost against a three-node R3 cluster on loopback, all in this process: sync waits one JetStream round
// trip (leader plus one follower write) per message; async pipelines up to MaxPendingAcks and waits the acks in
// order, as the broker's ack coalescing would. b.N messages of 256 bytes; ns/op is per message.
func BenchmarkPublishR3(b *testing.B) {
	nodes, _ := startCluster(b, 3)
	// Publish from a node that is not the stream leader: the common case in a 3-node cluster (2 of 3 nodes).
	m, err := nodes[0].Nodes(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	pub := nodes[0]
	for _, n := range nodes {
		if n.Node() != m.StreamLeader {
			pub = n
			break
		}
	}
	payload := make([]byte, 256)
	ctx := context.Background()

	b.Run("sync", func(b *testing.B) {
		b.SetBytes(int64(len(payload)))
		var lat []time.Duration
		for b.Loop() {
			t0 := time.Now()
			if _, err := pub.Publish(ctx, &Message{Topic: "bench/sync", Payload: payload, QoS: 1}); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
		}
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	})
	b.Run("async", func(b *testing.B) {
		b.SetBytes(int64(len(payload)))
		acks := make([]*Ack, 0, 1024)
		flush := func() {
			for _, a := range acks {
				if _, err := a.Wait(ctx); err != nil {
					b.Fatal(err)
				}
			}
			acks = acks[:0]
		}
		for b.Loop() {
			a, err := pub.PublishAsync(&Message{Topic: "bench/async", Payload: payload, QoS: 1})
			if err != nil {
				b.Fatal(err)
			}
			if acks = append(acks, a); len(acks) == cap(acks) {
				flush()
			}
		}
		flush()
	})
	// routed: publish async on one node until a consumer on another node has received every message.
	b.Run("routed", func(b *testing.B) {
		sub := nodes[0]
		if sub == pub {
			sub = nodes[1]
		}
		got := make(chan struct{}, 1024)
		k, err := sub.Consume(ctx, ConsumeOptions{Filters: FilterSubjects("bench/routed")}, func(Delivery) { got <- struct{}{} })
		if err != nil {
			b.Fatal(err)
		}
		defer k.Stop()
		b.SetBytes(int64(len(payload)))
		received := make(chan int)
		b.ResetTimer()
		go func() {
			n := 0
			for range got {
				if n++; n == b.N {
					break
				}
			}
			received <- n
		}()
		for range b.N {
			if _, err := pub.PublishAsync(&Message{Topic: "bench/routed", Payload: payload, QoS: 1}); err != nil {
				b.Fatal(err)
			}
		}
		select {
		case <-received:
		case <-time.After(60 * time.Second):
			b.Fatal("not all messages routed within 60s")
		}
	})
}

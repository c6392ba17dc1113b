package mochifix

import (
	"bytes"
	"fmt"
	"strconv"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/packets"
)

// TestQoS0BurstIsPacedNotDropped: a burst of QoS 0 publishes far larger than the subscriber's outbound
// queue (16 here) reaches a subscriber that reads as fast as it can, every message, in order; without the
// backpressure fix mochi drops most of it. A QoS 1 publish to a QoS 0 subscription is a QoS 0 delivery too.
func TestQoS0BurstIsPacedNotDropped(t *testing.T) {
	const total = 3000
	for _, tc := range []struct {
		wait     time.Duration
		pubQoS   byte
		lossless bool
	}{{2 * time.Second, 0, true}, {0, 0, false}, {2 * time.Second, 1, true}} {
		caps := mqtt.NewDefaultServerCapabilities()
		caps.MaximumClientWritesPending = 16
		s := mqtt.New(&mqtt.Options{Logger: quietLog(), Capabilities: caps})
		addr := serveWithFixes(t, s, Options{Hooks: []mqtt.Hook{new(auth.AllowHook)}, SlowSubscriberWait: tc.wait})
		sub := subscribeV5(t, addr, "reader", 0, "unused")
		sub.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 2,
			Filters: packets.Subscriptions{{Filter: "burst", Qos: 0}}})
		sub.expectType(packets.Suback)
		pub := subscribeV5(t, addr, "burster", 0, "unused")
		var burst bytes.Buffer
		for i := range total {
			pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: tc.pubQoS}, ProtocolVersion: 5,
				TopicName: "burst", Payload: []byte(strconv.Itoa(i))}
			if tc.pubQoS > 0 {
				pk.PacketID = uint16(i + 1)
			}
			if err := pk.PublishEncode(&burst); err != nil {
				t.Fatal(err)
			}
		}
		go func() { _, _ = pub.c.Write(burst.Bytes()) }()
		got, inOrder := 0, true
		for got < total {
			pk, ok := sub.next(3 * time.Second)
			if !ok {
				break
			}
			if pk.FixedHeader.Type != packets.Publish {
				continue
			}
			if string(pk.Payload) != fmt.Sprint(got) {
				inOrder = false
			}
			got++
		}
		if lossless := got == total && inOrder; lossless != tc.lossless {
			t.Errorf("slow_subscriber_wait %v, published at QoS %d: %d of %d QoS 0 deliveries, in order %v; want all in order: %v",
				tc.wait, tc.pubQoS, got, total, inOrder, tc.lossless)
		}
	}
}

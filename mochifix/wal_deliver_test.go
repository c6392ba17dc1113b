package mochifix

import (
	"errors"
	"math"
	"slices"
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// deliveryRecorder is an ACL that allows what allow says and records the delivery events mochi's hooks see.
type deliveryRecorder struct {
	mqtt.HookBase
	allow     bool
	exhausted int
	qos       []packets.Packet
}

func (h *deliveryRecorder) Provides(b byte) bool {
	return b == mqtt.OnACLCheck || b == mqtt.OnPacketIDExhausted || b == mqtt.OnQosPublish
}
func (h *deliveryRecorder) OnACLCheck(*mqtt.Client, string, bool) bool { return h.allow }
func (h *deliveryRecorder) OnPacketIDExhausted(*mqtt.Client, packets.Packet) {
	h.exhausted++
}
func (h *deliveryRecorder) OnQosPublish(_ *mqtt.Client, pk packets.Packet, _ int64, _ int) {
	h.qos = append(h.qos, pk)
}

// TestPublishOffline: a restored session gets a replayed message under the rules of mochi's
// publishToClient, case by case.
func TestPublishOffline(t *testing.T) {
	retained := walTestPacket("pub", "t/x", "m", 2)
	retained.FixedHeader.Retain = true
	for _, tc := range []struct {
		name       string
		version    byte
		sub        packets.Subscription
		pk         packets.Packet
		deny       bool
		fill       int // in-flight messages the session already holds
		wantErr    error
		wantRetain bool
		wantQoS    byte
		wantIDs    []int
	}{
		{name: "No Local subscription of the publisher", version: 5, sub: packets.Subscription{Filter: "t/#", Qos: 1, NoLocal: true},
			pk: walTestPacket("sub", "t/x", "m", 1), wantErr: errNoLocal},
		{name: "ACL denies", version: 4, sub: packets.Subscription{Filter: "t/#", Qos: 1}, pk: walTestPacket("pub", "t/x", "m", 1),
			deny: true, wantErr: packets.ErrNotAuthorized},
		{name: "QoS 0 subscription: dropped for a client without a connection", version: 4, sub: packets.Subscription{Filter: "t/#"},
			pk: walTestPacket("pub", "t/x", "m", 1), wantErr: packets.CodeDisconnect},
		{name: "QoS is the lower of message and subscription", version: 4, sub: packets.Subscription{Filter: "t/#", Qos: 1},
			pk: walTestPacket("pub", "t/x", "m", 2), wantQoS: 1},
		{name: "3.1.1: retain cleared", version: 4, sub: packets.Subscription{Filter: "t/#", Qos: 2}, pk: retained, wantQoS: 2},
		{name: "v5 without Retain As Published: retain cleared", version: 5, sub: packets.Subscription{Filter: "t/#", Qos: 2},
			pk: retained, wantQoS: 2},
		{name: "v5 Retain As Published, with subscription identifiers sorted", version: 5,
			sub: packets.Subscription{Filter: "t/#", Qos: 2, RetainAsPublished: true, Identifiers: map[string]int{"t/#": 12, "t/+": 3}},
			pk:  retained, wantQoS: 2, wantRetain: true, wantIDs: []int{3, 12}},
		{name: "forwarded retained flag kept, even for 3.1.1", version: 4, sub: packets.Subscription{Filter: "t/#", Qos: 2, FwdRetainedFlag: true},
			pk: retained, wantQoS: 2, wantRetain: true},
		{name: "window full", version: 4, sub: packets.Subscription{Filter: "t/#", Qos: 1}, pk: walTestPacket("pub", "t/x", "m", 1),
			fill: 10, wantErr: packets.ErrQuotaExceeded},
		// Every packet id is taken. mochi v2.7.9 checks the window before asking for an id, and 65535 ids
		// in flight fill any window (MaximumInflight is a uint16), so its answer is the quota one too:
		// OnPacketIDExhausted is never reached.
		{name: "packet ids exhausted", version: 4, sub: packets.Subscription{Filter: "t/#", Qos: 1}, pk: walTestPacket("pub", "t/x", "m", 1),
			fill: math.MaxUint16, wantErr: packets.ErrQuotaExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			caps := mqtt.NewDefaultServerCapabilities()
			caps.MaximumInflight = 10
			if tc.fill == math.MaxUint16 {
				caps.MaximumInflight = math.MaxUint16
			}
			s := mqtt.New(&mqtt.Options{Logger: quietLog(), Capabilities: caps})
			cl := s.NewClient(nil, "t", "sub", false)
			cl.Properties.ProtocolVersion = tc.version
			cl.Stop(packets.ErrServerShuttingDown)
			for i := range tc.fill {
				cl.State.Inflight.Set(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: uint16(i + 1)})
			}
			rec := &deliveryRecorder{allow: !tc.deny}
			var persisted []packets.Packet
			persist := func(_ *mqtt.Client, pk packets.Packet) { persisted = append(persisted, pk) }

			out, err := publishOffline(s, hookSet{rec}, cl, tc.sub, tc.pk, persist, quietLog())
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("error %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr != nil {
				if len(persisted) != 0 || len(rec.qos) != 0 {
					t.Fatalf("refused copy was stored: %v", persisted)
				}
				if dropped := s.Info.InflightDropped; errors.Is(tc.wantErr, packets.ErrQuotaExceeded) && dropped != 1 {
					t.Errorf("InflightDropped = %d, want 1", dropped)
				}
				if rec.exhausted != 0 {
					t.Errorf("OnPacketIDExhausted called %d times", rec.exhausted)
				}
				return
			}
			if len(persisted) != 1 || len(rec.qos) != 1 || persisted[0].PacketID != out.PacketID || out.PacketID == 0 {
				t.Fatalf("persisted %v, OnQosPublish %v, copy id %d: want the copy once each, with a packet id", persisted, rec.qos, out.PacketID)
			}
			if in, ok := cl.State.Inflight.Get(out.PacketID); !ok || string(in.Payload) != "m" {
				t.Errorf("copy not in flight under %d", out.PacketID)
			}
			ids := slices.DeleteFunc(slices.Clone(out.Properties.SubscriptionIdentifier), func(id int) bool { return id == 0 })
			if out.FixedHeader.Qos != tc.wantQoS || out.FixedHeader.Retain != tc.wantRetain || !slices.Equal(ids, tc.wantIDs) {
				t.Errorf("copy QoS %d retain %v ids %v, want %d %v %v", out.FixedHeader.Qos, out.FixedHeader.Retain, ids, tc.wantQoS, tc.wantRetain, tc.wantIDs)
			}
			if tc.pk.FixedHeader.Retain && !retained.FixedHeader.Retain {
				t.Error("the original packet was changed")
			}
		})
	}
}

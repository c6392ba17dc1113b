package mochifix

import (
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

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
		hooks:   hookSet{&denyListACL{denied: f.denied}},
		persist: func(cl *mqtt.Client, pk packets.Packet) { f.persisted[cl.ID] = append(f.persisted[cl.ID], pk) },
		now:     time.Now,
		log:     quietLog(),
	}
	st, err := r.run(w, pending)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// denyListACL allows every client to read except those in denied.
type denyListACL struct {
	mqtt.HookBase
	denied map[string]bool
}

func (h *denyListACL) Provides(b byte) bool { return b == mqtt.OnACLCheck }

func (h *denyListACL) OnACLCheck(cl *mqtt.Client, _ string, _ bool) bool { return !h.denied[cl.ID] }

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

package cluster

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/idmq/idmq/internal/testkit"
)

// windowFiller fills the in-flight window of the member a shared delivery goes to, after the cluster hook
// picked it and before mochi hands the delivery over: what other deliveries to the member do at that moment.
type windowFiller struct {
	mqtt.HookBase
	server *mqtt.Server
	once   sync.Once
	filled chan *mqtt.Client
}

func (f *windowFiller) ID() string { return "test-window-filler" }

func (f *windowFiller) Provides(b byte) bool { return b == mqtt.OnSelectSubscribers }

func (f *windowFiller) OnSelectSubscribers(subs *mqtt.Subscribers, pk packets.Packet) *mqtt.Subscribers {
	if !strings.HasPrefix(pk.Origin, shareOriginPrefix) {
		return subs
	}
	for id := range subs.SharedSelected {
		cl, ok := f.server.Clients.Get(id)
		if !ok {
			continue
		}
		f.once.Do(func() {
			for i := 0; cl.State.Inflight.Len() < int(f.server.Options.Capabilities.MaximumInflight); i++ {
				cl.State.Inflight.Set(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
					PacketID: uint16(60000 + i)})
			}
			f.filled <- cl
		})
	}
	return subs
}

// sharedNode is listeningNode with hook options, an in-flight window of maxInflight and extra hooks after
// the cluster's.
func sharedNode(t *testing.T, c *Cluster, o HookOptions, maxInflight uint16, extra ...mqtt.Hook) (*testkit.Mochi, *Hook) {
	t.Helper()
	m := testkit.NewMochi(testkit.MochiOptions{InlineClient: true})
	if maxInflight > 0 {
		m.Server.Options.Capabilities.MaximumInflight = maxInflight
	}
	h := NewHook(c, m.Server, o)
	m.Serve(t, append([]mqtt.Hook{new(auth.AllowHook), h}, extra...)...)
	if err := h.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Stop() })
	return m, h
}

// TestSharedWindowFullIsGivenBack: a QoS 1 delivery mochi refuses because the member's in-flight window
// filled after the member was picked is given back to JetStream, not acknowledged: once the window has room
// the message arrives.
func TestSharedWindowFullIsGivenBack(t *testing.T) {
	nodes := startSolo(t)
	filler := &windowFiller{filled: make(chan *mqtt.Client, 1)}
	m, _ := sharedNode(t, nodes[0], HookOptions{}, 4, filler)
	filler.server = m.Server
	got := newTally()
	member(t, m.TCP, "m", "$share/g/full", got, false)
	waitPulling(t, nodes[0], "g", "full", 1)

	publishInline(t, m.Server, "full", 1)
	var cl *mqtt.Client
	select {
	case cl = <-filler.filled:
	case <-time.After(10 * time.Second):
		t.Fatal("no shared delivery")
	}
	time.Sleep(200 * time.Millisecond) // the refused delivery is settled meanwhile
	for _, pk := range cl.State.Inflight.GetAll(false) {
		if pk.PacketID >= 60000 {
			cl.State.Inflight.Delete(pk.PacketID)
		}
	}
	eventually(t, 10*time.Second, "the refused message once the window has room", func() bool { return got.total() == 1 })
}

// TestSharedReadDeniedIsDropped: a delivery the ACL's read check refuses (it changed since the member
// subscribed) is dropped and acknowledged, not redelivered again and again; the group's other messages
// arrive.
func TestSharedReadDeniedIsDropped(t *testing.T) {
	nodes := startSolo(t)
	m, _ := sharedNode(t, nodes[0], HookOptions{ReadAllowed: func(_ *mqtt.Client, topic string, _ bool) bool {
		return topic != "acl/secret"
	}}, 0)
	got := newTally()
	member(t, m.TCP, "m", "$share/g/acl/+", got, false)
	waitPulling(t, nodes[0], "g", "acl/+", 1)

	publishInline(t, m.Server, "acl/secret", 1)
	publishInline(t, m.Server, "acl/open", 1)
	eventually(t, 10*time.Second, "the allowed message", func() bool { return got.total() >= 1 })
	time.Sleep(500 * time.Millisecond) // redeliveries of the refused one would pile up meanwhile
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cons, err := nodes[0].b.stream.Consumer(ctx, ShareConsumerName("g", "acl/+"))
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got.total() != 1 || info.NumAckPending != 0 || info.NumRedelivered != 0 || info.Delivered.Consumer != 2 {
		t.Fatalf("received %d; consumer: %d unacknowledged, %d redelivered, %d deliveries; want 1, 0, 0, 2",
			got.total(), info.NumAckPending, info.NumRedelivered, info.Delivered.Consumer)
	}
}

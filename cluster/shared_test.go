package cluster

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/idmq/idmq/internal/testkit"
)

// listeningNode is a mochi server with a TCP listener wired to c by a Hook (mochi's allow-all auth stands in
// for idmq's, whose e2e tests run the real one).
func listeningNode(t *testing.T, c *Cluster) (*testkit.Mochi, *Hook) {
	t.Helper()
	return listeningNodeAckWait(t, c, 0)
}

// listeningNodeAckWait is listeningNode with the shared subscriptions' ack wait shortened (0: the default).
func listeningNodeAckWait(t *testing.T, c *Cluster, ackWait time.Duration) (*testkit.Mochi, *Hook) {
	t.Helper()
	m := testkit.NewMochi(testkit.MochiOptions{InlineClient: true})
	h := NewHook(c, m.Server, HookOptions{})
	if ackWait > 0 {
		h.shared.ackWait = ackWait
	}
	m.Serve(t, new(auth.AllowHook), h)
	if err := h.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Stop() })
	return m, h
}

// tally counts what each client received, by payload.
type tally struct {
	mu  sync.Mutex
	got map[string]map[string]int // payload -> client -> times
	per map[string]int            // client -> messages
}

func newTally() *tally { return &tally{got: map[string]map[string]int{}, per: map[string]int{}} }

func (y *tally) add(client string, payload []byte) {
	y.mu.Lock()
	defer y.mu.Unlock()
	p := string(payload)
	if y.got[p] == nil {
		y.got[p] = map[string]int{}
	}
	y.got[p][client]++
	y.per[client]++
}

func (y *tally) total() int {
	y.mu.Lock()
	defer y.mu.Unlock()
	n := 0
	for _, c := range y.per {
		n += c
	}
	return n
}

// testMember is a paho client and its connection.
type testMember struct {
	*paho.Client
	conn net.Conn
}

// member connects a client to addr that subscribes to filter at QoS 1 and records what it receives. With
// holdAcks it never acknowledges (paho's manual acknowledgement, never given).
func member(t *testing.T, addr, id, filter string, y *tally, holdAcks bool) testMember {
	t.Helper()
	return memberWith(t, addr, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30}, filter, y, holdAcks)
}

// memberWith is member with its own CONNECT; no SUBSCRIBE when filter is empty.
func memberWith(t *testing.T, addr string, cp *paho.Connect, filter string, y *tally, holdAcks bool) testMember {
	t.Helper()
	id := cp.ClientID
	conn := testkit.DialTCP(t, addr)
	c := paho.NewClient(paho.ClientConfig{
		Conn:                       conn,
		EnableManualAcknowledgment: holdAcks,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			y.add(id, pr.Packet.Payload)
			return true, nil
		}},
		OnClientError: func(error) {},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx, cp); err != nil {
		t.Fatalf("connect %s: %v", id, err)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	if filter == "" {
		return testMember{c, conn}
	}
	sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
	if err != nil || sa.Reasons[0] != 1 {
		t.Fatalf("subscribe %s: %v %v", id, err, sa)
	}
	return testMember{c, conn}
}

func publishInline(t *testing.T, s *mqtt.Server, topic string, n int) {
	t.Helper()
	for i := range n {
		if err := s.Publish(topic, []byte(strconv.Itoa(i)), false, 1); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSharedGroupAcrossNodes: a group with two members on each of two nodes receives each message once,
// spread over both nodes, while an ordinary subscriber still receives every message once; publishes come
// from both nodes. The group has one JetStream consumer.
func TestSharedGroupAcrossNodes(t *testing.T) {
	nodes, _ := startCluster(t, 2)
	mA, _ := listeningNode(t, nodes[0])
	mB, _ := listeningNode(t, nodes[1])
	group, plain := newTally(), newTally()
	for i, addr := range []string{mA.TCP, mA.TCP, mB.TCP, mB.TCP} {
		member(t, addr, fmt.Sprintf("m%d", i), "$share/g/s/#", group, false)
	}
	member(t, mB.TCP, "plain", "s/#", plain, false)
	waitPulling(t, nodes[0], "g", "s/#", 4)

	const n = 400
	publishInline(t, mA.Server, "s/a", n/2)
	for i := n / 2; i < n; i++ {
		if err := mB.Server.Publish("s/b", []byte(strconv.Itoa(i)), false, 1); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 20*time.Second, "every message to the group and the subscriber", func() bool {
		return group.total() >= n && plain.total() >= n
	})
	time.Sleep(500 * time.Millisecond) // duplicates would arrive meanwhile
	group.mu.Lock()
	defer group.mu.Unlock()
	if len(group.got) != n || len(plain.got) != n {
		t.Fatalf("distinct messages: group %d, subscriber %d; want %d", len(group.got), len(plain.got), n)
	}
	for p, by := range group.got {
		if len(by) != 1 {
			t.Fatalf("message %s reached %d members: %v", p, len(by), by)
		}
		for _, times := range by {
			if times != 1 {
				t.Fatalf("message %s delivered %d times", p, times)
			}
		}
	}
	onA := group.per["m0"] + group.per["m1"]
	if onA < n/4 || onA > 3*n/4 {
		t.Fatalf("node A's members got %d of %d (%v)", onA, n, group.per)
	}
	names := consumerNames(t, nodes[0])
	if !names[ShareConsumerName("g", "s/#")] {
		t.Fatalf("no consumer %s among %v", ShareConsumerName("g", "s/#"), names)
	}
}

// waitPulling waits until the pull requests of n members wait on the consumer of group and filter (a
// member's first request may fail while the new consumer's leader is being chosen, and is retried).
func waitPulling(t *testing.T, c *Cluster, group, filter string, members int) {
	t.Helper()
	n := members * shareLanes
	eventually(t, 10*time.Second, fmt.Sprintf("%d pull requests on $share/%s/%s", n, group, filter), func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		cons, err := c.b.stream.Consumer(ctx, ShareConsumerName(group, filter))
		if err != nil {
			return false
		}
		info, err := cons.Info(ctx)
		return err == nil && info.NumWaiting >= n
	})
}

func consumerNames(t *testing.T, c *Cluster) map[string]bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out := map[string]bool{}
	l := c.b.stream.ListConsumers(ctx)
	for info := range l.Info() {
		out[info.Name] = true
	}
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestSharedUnackedGoesToAnotherMember: a member that holds its QoS 1 messages unacknowledged and loses its
// connection has them delivered to the group's member on another node at once (not after shareAckWait);
// none is lost.
func TestSharedUnackedGoesToAnotherMember(t *testing.T) {
	nodes, _ := startCluster(t, 2)
	mA, _ := listeningNode(t, nodes[0])
	mB, _ := listeningNode(t, nodes[1])
	held, good := newTally(), newTally()
	holder := member(t, mA.TCP, "holder", "$share/g/w/+", held, true)
	member(t, mB.TCP, "good", "$share/g/w/+", good, false)
	waitPulling(t, nodes[0], "g", "w/+", 2)

	const n = 40
	publishInline(t, mA.Server, "w/x", n)
	eventually(t, 10*time.Second, "messages at both members", func() bool { return held.total()+good.total() >= n })
	time.Sleep(300 * time.Millisecond) // a copy for each node would arrive meanwhile
	if held.total() == 0 || held.total()+good.total() != n {
		t.Fatalf("holder %d + other member %d; want %d, some at the holder", held.total(), good.total(), n)
	}
	_ = holder.conn.Close() // dies without acknowledging
	eventually(t, 10*time.Second, "every message at the remaining member", func() bool {
		good.mu.Lock()
		defer good.mu.Unlock()
		return len(good.got) == n
	})
}

// TestSharedDeliveryPicksOneSubscription: mochi asked about a shared delivery selects only its member's
// subscription (no ordinary subscriber, no inline one); any other routed publish selects no shared
// subscriber; a publish with no origin (mochi's $SYS) keeps mochi's choice.
func TestSharedDeliveryPicksOneSubscription(t *testing.T) {
	s, h := mochiNode(t, startSolo(t)[0])
	cl, _ := connectedClient(t, s, "m1", "")
	sub := packets.Subscription{Filter: "$share/g/a", Qos: 1}
	subs := &mqtt.Subscribers{
		Shared:              map[string]map[string]packets.Subscription{sub.Filter: {"m1": sub, "m2": sub}},
		Subscriptions:       map[string]packets.Subscription{"plain": {Filter: "a"}},
		InlineSubscriptions: map[int]mqtt.InlineSubscription{1: {}},
	}
	d := &delivery{origin: shareOriginPrefix + "1", m: &shareMember{cl: cl, filter: sub.Filter}}
	h.shared.current.Store(d)
	got := h.OnSelectSubscribers(subs, packets.Packet{Origin: d.origin})
	h.shared.current.Store(nil)
	if !d.selected || len(got.SharedSelected) != 1 || got.SharedSelected["m1"].Filter != sub.Filter ||
		len(got.Subscriptions)+len(got.InlineSubscriptions)+len(got.Shared) != 0 {
		t.Fatalf("shared delivery selected %+v (selected %v)", got, d.selected)
	}
	routed := h.OnSelectSubscribers(subs, packets.Packet{Origin: "publisher"})
	if len(routed.Shared) != 0 || len(routed.SharedSelected) != 0 || len(routed.Subscriptions) != 1 {
		t.Fatalf("routed publish selected %+v", routed)
	}
	subs.Shared = map[string]map[string]packets.Subscription{sub.Filter: {"m1": sub}}
	if sys := h.OnSelectSubscribers(subs, packets.Packet{}); len(sys.Shared) != 1 {
		t.Fatalf("$SYS publish lost mochi's shared subscribers: %+v", sys)
	}
}

func TestSplitSharedAndConsumerName(t *testing.T) {
	tests := []struct {
		filter, group, topic string
		ok                   bool
	}{
		{"$share/g/a/b/#", "g", "a/b/#", true},
		{"$share/g.x y/+", "g.x y", "+", true},
		{"$share/g", "", "", false},
		{"$share//a", "", "", false},
		{"a/b", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.filter, func(t *testing.T) {
			g, f, ok := splitShared(tt.filter)
			if g != tt.group || f != tt.topic || ok != tt.ok {
				t.Fatalf("got %q %q %v", g, f, ok)
			}
		})
	}
	a, b := ShareConsumerName("g", "a/#"), ShareConsumerName("g/a", "#")
	if a == b || a != ShareConsumerName("g", "a/#") || len(a) != len(shareConsumerPfx)+32 {
		t.Fatalf("names %q %q", a, b)
	}
}

// TestSharedQoS0AndLeaving: QoS 0 copies are handed over once each; a member that unsubscribes receives no
// more, and once the node's last member left, mochi holds no shared subscription for the topic (the guard
// is gone with the group).
func TestSharedQoS0AndLeaving(t *testing.T) {
	nodes, _ := startCluster(t, 2)
	mA, hA := listeningNode(t, nodes[0])
	mB, _ := listeningNode(t, nodes[1])
	atA, atB := newTally(), newTally()
	a := member(t, mA.TCP, "a", "$share/g/q", atA, false)
	member(t, mB.TCP, "b", "$share/g/q", atB, false)
	waitPulling(t, nodes[0], "g", "q", 2)

	for i := range 50 {
		if err := mB.Server.Publish("q", []byte(strconv.Itoa(i)), false, 0); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "50 QoS 0 messages at the group", func() bool { return atA.total()+atB.total() >= 50 })
	time.Sleep(300 * time.Millisecond)
	if got := atA.total() + atB.total(); got != 50 || atA.total() == 0 {
		t.Fatalf("group received %d (a %d, b %d); want 50, some at each", got, atA.total(), atB.total())
	}

	sharedAt := func() int { return len(mA.Server.Topics.Subscribers("q").Shared) }
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := a.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{"$share/g/q"}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "no shared subscription left on A", func() bool { return sharedAt() == 0 })
	hA.shared.mu.Lock()
	groups := len(hA.shared.groups)
	hA.shared.mu.Unlock()
	if groups != 0 {
		t.Fatalf("node A still holds %d groups", groups)
	}
	before := atA.total()
	publishInline(t, mA.Server, "q", 20)
	eventually(t, 10*time.Second, "20 more at b", func() bool { return atB.total() >= 50-before+20 })
	if atA.total() != before {
		t.Fatalf("a received %d after unsubscribing", atA.total()-before)
	}
}

// heldAndOther connects, on two nodes, a member that never acknowledges and one that does, publishes n QoS 1
// messages from pubNode and waits until the group has them all; it returns how many the holder has.
func heldAndOther(t *testing.T, c *Cluster, holderAt, otherAt *testkit.Mochi, pub *mqtt.Server, n int) (
	holder testMember, held, other *tally) {
	t.Helper()
	held, other = newTally(), newTally()
	holder = member(t, holderAt.TCP, "holder", "$share/g/h", held, true)
	member(t, otherAt.TCP, "other", "$share/g/h", other, false)
	waitPulling(t, c, "g", "h", 2)
	publishInline(t, pub, "h", n)
	eventually(t, 10*time.Second, "every message at the group", func() bool { return held.total()+other.total() >= n })
	if held.total() == 0 || held.total()+other.total() != n {
		t.Fatalf("holder %d + other %d; want %d, some at the holder", held.total(), other.total(), n)
	}
	return holder, held, other
}

// TestSharedInFlightKeptWhileConnected: deliveries in flight to a connected member that is slow to
// acknowledge are not redelivered to another member when the ack wait passes.
func TestSharedInFlightKeptWhileConnected(t *testing.T) {
	const wait = 1500 * time.Millisecond
	nodes, _ := startCluster(t, 2)
	mA, _ := listeningNodeAckWait(t, nodes[0], wait)
	mB, _ := listeningNodeAckWait(t, nodes[1], wait)
	const n = 40
	_, held, other := heldAndOther(t, nodes[0], mA, mB, mB.Server, n)
	time.Sleep(4 * wait)
	if got := other.total(); got != n-held.total() {
		t.Fatalf("the other member has %d after %s; want %d (the holder's %d redelivered?)",
			got, 4*wait, n-held.total(), held.total())
	}
}

// TestSharedNodeDeathRedelivers: deliveries held by a node that is gone (its NATS connection and server shut,
// nothing acknowledged or given back) reach another node's member after the ack wait.
func TestSharedNodeDeathRedelivers(t *testing.T) {
	const wait = 2 * time.Second
	nodes, _ := startCluster(t, 3)
	mA, _ := listeningNodeAckWait(t, nodes[0], wait)
	mB, _ := listeningNodeAckWait(t, nodes[1], wait)
	mC, _ := listeningNodeAckWait(t, nodes[2], wait)
	const n = 40
	_, held, other := heldAndOther(t, nodes[2], mA, mB, mC.Server, n)
	_ = nodes[0].Close()
	eventually(t, 30*time.Second, "the dead node's deliveries at the other member", func() bool {
		other.mu.Lock()
		defer other.mu.Unlock()
		return len(other.got) == n
	})
	t.Logf("%d held by the dead node redelivered", held.total())
}

// TestSharedResumedSessionRejoins: a member with a persistent session receives nothing of the group while
// offline (the online member gets it all, nothing queues in the offline session) and is a member again when
// it resumes the session, without subscribing again.
func TestSharedResumedSessionRejoins(t *testing.T) {
	nodes, _ := startCluster(t, 2)
	mA, _ := listeningNode(t, nodes[0])
	mB, _ := listeningNode(t, nodes[1])
	persistent, other := newTally(), newTally()
	expiry := uint32(60)
	cp := func(clean bool) *paho.Connect {
		return &paho.Connect{ClientID: "p", CleanStart: clean, KeepAlive: 30,
			Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}}
	}
	p := memberWith(t, mA.TCP, cp(true), "$share/g/r", persistent, false)
	member(t, mB.TCP, "other", "$share/g/r", other, false)
	if err := p.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "p offline", func() bool {
		cl, ok := mA.Server.Clients.Get("p") // a persistent session leaves the node for idmq-sessions
		return !ok || cl.Closed()
	})
	publishInline(t, mB.Server, "r", 20)
	eventually(t, 10*time.Second, "20 at the online member", func() bool { return other.total() >= 20 })

	memberWith(t, mA.TCP, cp(false), "", persistent, false)
	waitPulling(t, nodes[0], "g", "r", 2)
	if persistent.total() != 0 {
		t.Fatalf("the resumed session brought %d queued group messages", persistent.total())
	}
	for i := range 40 {
		if err := mB.Server.Publish("r", []byte("after-"+strconv.Itoa(i)), false, 1); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "40 more at the group", func() bool { return persistent.total()+other.total() >= 60 })
	if persistent.total() == 0 {
		t.Fatal("the resumed member received nothing")
	}
}

// TestSharedTakeoverKeepsInFlight: a member's session taken over by a new connection (Clean Start 0) keeps
// the deliveries in flight: mochi resends them to the new connection, so they are not also given to another
// member ([MQTT-4.8.2-4]: the delivery completes to the client that reconnects), and the new connection's
// acknowledgements settle them.
func TestSharedTakeoverKeepsInFlight(t *testing.T) {
	nodes, _ := startCluster(t, 2)
	mA, hA := listeningNode(t, nodes[0])
	mB, _ := listeningNode(t, nodes[1])
	held, other, resumed := newTally(), newTally(), newTally()
	expiry := uint32(60)
	cp := func(clean bool) *paho.Connect {
		return &paho.Connect{ClientID: "p", CleanStart: clean, KeepAlive: 30,
			Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}}
	}
	memberWith(t, mA.TCP, cp(true), "$share/g/k", held, true)
	member(t, mB.TCP, "other", "$share/g/k", other, false)
	waitPulling(t, nodes[0], "g", "k", 2)

	const n = 40
	publishInline(t, mB.Server, "k", n)
	eventually(t, 10*time.Second, "messages at both members", func() bool { return held.total()+other.total() >= n })
	if held.total() == 0 {
		t.Fatal("the holder received nothing")
	}
	memberWith(t, mA.TCP, cp(false), "", resumed, false) // takes the session over
	eventually(t, 10*time.Second, "the held deliveries resent to the new connection", func() bool {
		return resumed.total() >= held.total()
	})
	time.Sleep(time.Second) // a delivery given back would reach the other member meanwhile
	held.mu.Lock()
	other.mu.Lock()
	defer held.mu.Unlock()
	defer other.mu.Unlock()
	for p := range held.got {
		if other.got[p] != nil {
			t.Errorf("%q, in flight to the taken-over session, was delivered to the other member too", p)
		}
	}
	// The new connection's acknowledgements settled the records: nothing is left to give back.
	eventually(t, 5*time.Second, "records settled", func() bool { return hA.shared.records.Load() == 0 })
}

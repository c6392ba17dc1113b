package cluster

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// connectWithWill connects client id to node s (hook h) with a Will on topic "will/<id>" delayed by delay
// seconds; clean is its Clean Start.
func connectWithWill(t *testing.T, s *mqtt.Server, h *Hook, id string, delay uint32, clean bool) *mqtt.Client {
	t.Helper()
	cl, _ := connectedClient(t, s, id, "alice")
	cl.Properties.Clean = clean
	cl.Properties.Will = mqtt.Will{Flag: 1, TopicName: "will/" + id, Payload: []byte("gone " + id), Qos: 1,
		WillDelayInterval: delay, User: []packets.UserProperty{{Key: "k", Val: "v"}}}
	pk := packets.Packet{Connect: packets.ConnectParams{WillProperties: packets.Properties{ContentType: "text/plain"}}}
	if err := h.OnConnect(cl, pk); err != nil {
		t.Fatal(err)
	}
	return cl
}

// TestWillsOfLostNode: when a node dies, the Wills of its clients are published once (by one survivor, seen
// once on each other node), not before their delay; a client that connected again to another node continuing
// its session cancels its Will; one that connected again with a clean start does not.
func TestWillsOfLostNode(t *testing.T) {
	nodes, _ := startCluster(t, 3)
	sA, hA := mochiNode(t, nodes[0])
	sB, hB := mochiNode(t, nodes[1])
	sC, _ := mochiNode(t, nodes[2])
	var atB, atC inbox
	atB.subscribe(t, sB, "will/#", 1)
	atC.subscribe(t, sC, "will/#", 2)

	connectWithWill(t, sA, hA, "lost", 2, false)
	connectWithWill(t, sA, hA, "back", 12, false)
	connectWithWill(t, sA, hA, "fresh", 12, false)
	connectWithWill(t, sA, hA, "bye", 0, false)
	bye, _ := sA.Clients.Get("bye")
	hA.OnDisconnect(bye, nil, true) // ended while its node lived: mochi's business, not the cluster's
	time.Sleep(500 * time.Millisecond)

	nodes[0].srv.Shutdown() // node A dies without a goodbye
	killed := time.Now()
	var continued atomic.Bool
	reconnect := func(id string, clean bool) bool {
		// Refused while the leaders A held are elected again (seconds on a loaded machine): the client tries
		// again, as a real one does, within the 12s delay plus the ~5s until A is seen gone.
		for start := time.Now(); time.Since(start) < 14*time.Second; time.Sleep(100 * time.Millisecond) {
			cl, _ := connectedClient(t, sB, id, "alice")
			cl.Properties.Clean = clean
			if hB.OnConnect(cl, packets.Packet{}) == nil {
				return true
			}
		}
		return false
	}
	go func() { // the clients of A reconnect to B before their delay ends
		continued.Store(reconnect("back", false) && reconnect("fresh", true))
	}()

	has := func(in *inbox, topic string) bool {
		for _, pk := range in.all() {
			if pk.TopicName == topic {
				return true
			}
		}
		return false
	}
	eventually(t, 20*time.Second, "will/lost on C", func() bool { return has(&atC, "will/lost") })
	if since := time.Since(killed); since < 2*time.Second {
		t.Errorf("a Will delayed by 2s was published %s after its node died", since)
	}
	eventually(t, 30*time.Second, "the Wills on B and C", func() bool { return len(atB.all()) >= 2 && len(atC.all()) >= 2 })
	time.Sleep(3 * time.Second) // a second publication, or a cancelled Will, would come meanwhile
	if !continued.Load() {
		t.Fatal("the client could not connect again on B")
	}
	for name, in := range map[string]*inbox{"B": &atB, "C": &atC} {
		got := map[string]int{}
		for _, pk := range in.all() {
			got[pk.TopicName]++
			if pk.TopicName == "will/lost" {
				if pk.Origin != "lost" || string(pk.Payload) != "gone lost" || pk.Properties.ContentType != "text/plain" ||
					len(pk.Properties.User) != 1 {
					t.Errorf("%s: Will arrived as origin %q payload %q properties %+v", name, pk.Origin, pk.Payload, pk.Properties)
				}
			}
		}
		if got["will/lost"] != 1 || got["will/fresh"] != 1 || got["will/back"] != 0 || got["will/bye"] != 0 {
			t.Errorf("%s received %v; want will/lost and will/fresh once each", name, got)
		}
	}
}

// TestWillOnTakeoverAcrossNodes: a client taken over from another node keeps mochi's one-node rule for its
// delayed Will (MQTT 5, 3.1.3.2.2): a new connection continuing the session cancels it, a clean start sends it
// at once; a Will without delay is left to mochi, which sends it at the close.
func TestWillOnTakeoverAcrossNodes(t *testing.T) {
	nodes, _ := startCluster(t, 2)
	sA, hA := mochiNode(t, nodes[0])
	sB, hB := mochiNode(t, nodes[1])
	var atA, atB inbox
	atA.subscribe(t, sA, "will/#", 1)
	atB.subscribe(t, sB, "will/#", 1)
	kept := connectWithWill(t, sA, hA, "kept", 30, false)
	ended := connectWithWill(t, sA, hA, "ended", 30, false)
	atClose := connectWithWill(t, sA, hA, "at-close", 0, false)
	for id, clean := range map[string]bool{"kept": false, "ended": true, "at-close": false} {
		cl, _ := connectedClient(t, sB, id, "alice")
		cl.Properties.Clean = clean
		if err := hB.OnConnect(cl, packets.Packet{}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "the ended session's Will on A and B", func() bool { return len(atA.all()) > 0 && len(atB.all()) > 0 })
	time.Sleep(time.Second)
	for name, in := range map[string]*inbox{"A": &atA, "B": &atB} {
		if got := in.all(); len(got) != 1 || got[0].TopicName != "will/ended" {
			t.Errorf("%s received %d messages (%v); want will/ended once", name, len(got), got)
		}
	}
	// A sees each takeover through its owners watch, in turn: on a loaded machine "kept" may follow later.
	eventually(t, 10*time.Second, "no delayed Will left on the old connections (mochi would publish it after the delay)", func() bool {
		return atomic.LoadUint32(&kept.Properties.Will.Flag) == 0 && atomic.LoadUint32(&ended.Properties.Will.Flag) == 0
	})
	if atomic.LoadUint32(&atClose.Properties.Will.Flag) == 0 {
		t.Error("the Will without delay was removed: mochi would not publish it at the close")
	}
}

// TestWillRecordsFollowConnections: a node keeps one Will record per connected client: a second connection of
// the same client id here replaces the first one's record, and a connection that ends removes its own.
func TestWillRecordsFollowConnections(t *testing.T) {
	nodes := startSolo(t)
	s, h := mochiNode(t, nodes[0])
	keys := func() int {
		l, err := nodes[0].b.wills.ListKeys(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for range l.Keys() {
			n++
		}
		return n
	}
	first := connectWithWill(t, s, h, "dev", 5, false)
	second := connectWithWill(t, s, h, "dev", 5, false)
	h.OnDisconnect(first, nil, false)
	eventually(t, 5*time.Second, "one record for one connection", func() bool { return keys() == 1 })
	h.OnDisconnect(second, nil, true)
	eventually(t, 5*time.Second, "no record once it ended", func() bool { return keys() == 0 })
	h.wills.purgeMarkers(-1) // what the loop does every markerPurgeEvery, for markers that old
	st, err := nodes[0].b.wills.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n := st.Values(); n != 0 {
		t.Fatalf("%d entries left in the bucket; want its delete markers purged", n)
	}
}

// A node that only looks lost in this node's view (its renewals not seen: a stalled watch, late heartbeats) is
// read in the bucket before any Will's delay starts, and the delay counts from the read that found it gone:
// a Will never comes before its node died plus its delay (CI saw a 6s Will 5.8s after the kill).
func TestWillDelayCountsFromAConfirmedLoss(t *testing.T) {
	c := &Cluster{cfg: Config{Node: "b"}, opts: Options{Heartbeat: time.Second, OpTimeout: time.Second}}
	w := newWills(c, nil, nil)
	w.ctx = context.Background()
	var alive atomic.Bool
	alive.Store(true)
	w.probeNode = func(context.Context, string) (bool, time.Time, error) { return alive.Load(), time.Time{}, nil }
	k := &knownWill{rec: willRecord{Client: "dev", Node: "a", Delay: 6}}
	w.known["a/dev"] = k
	answer := func(now time.Time) {
		t.Helper()
		select {
		case r := <-w.probed:
			w.probeDone(r, now)
		case <-time.After(5 * time.Second):
			t.Fatal("no read of the presence key")
		}
	}

	t0 := time.Now()
	w.lastSeen["a"] = t0 // then silence in this node's view, though a lives
	w.check(t0.Add(PresenceTTL + 2*time.Second))
	answer(t0.Add(PresenceTTL + 2*time.Second))
	w.check(t0.Add(PresenceTTL + 3*time.Second))
	if !k.since.IsZero() || k.firing {
		t.Fatalf("a live node's Will is due (since %s, firing %v) because this node's view was stale", k.since, k.firing)
	}

	died := t0.Add(20 * time.Second)
	alive.Store(false)
	w.check(died.Add(PresenceTTL + 2*time.Second)) // silent again: read again
	confirmed := died.Add(PresenceTTL + 2*time.Second)
	answer(confirmed)
	w.check(confirmed)
	if !k.since.Equal(confirmed) {
		t.Fatalf("the delay counts from %s, want the read that found the node gone (%s)", k.since, confirmed)
	}
	w.check(confirmed.Add(5 * time.Second))
	if k.firing {
		t.Fatal("the Will fired before its delay passed since the confirmed loss")
	}
}

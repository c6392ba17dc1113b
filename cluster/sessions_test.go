package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/idmq/idmq/internal/testkit"
	"github.com/idmq/idmq/mochifix"
)

// sessionNode is a mochi server on loopback with mochi's fixes, allow-all authentication (test only: the
// broker's e2e tests run idmq's), and the cluster hook whose replay denies reading topics under "secret/".
func sessionNode(t *testing.T, c *Cluster) (*testkit.Mochi, *Hook) {
	t.Helper()
	m := testkit.NewMochi(testkit.MochiOptions{InlineClient: true})
	h := NewHook(c, m.Server, HookOptions{ReadAllowed: func(_ *mqtt.Client, topic string, _ bool) bool {
		return !strings.HasPrefix(topic, "secret/")
	}})
	if _, err := mochifix.Add(m.Server, mochifix.Options{Hooks: []mqtt.Hook{new(auth.AllowHook), h}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Stop() })
	m.Serve(t)
	if err := h.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return m, h
}

// persistentClient connects id to addr with clean start as given and a session expiry of one hour.
func persistentClient(t *testing.T, addr, id string, clean bool) (*testkit.V5Client, *paho.Connack) {
	t.Helper()
	expiry := uint32(3600)
	c, ca, err := testkit.ConnectV5(t, testkit.DialTCP(t, addr), &paho.Connect{ClientID: id, CleanStart: clean,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
	if err != nil {
		t.Fatalf("connect %s: %v", id, err)
	}
	return c, ca
}

func publishN(t *testing.T, c *testkit.V5Client, topic string, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		if _, err := c.Publish(context.Background(), &paho.Publish{Topic: topic, QoS: 1, Payload: fmt.Appendf(nil, "%d", i)}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
}

// collect reads messages until n arrived or within passed, then waits quiet for extra ones.
func collect(c *testkit.V5Client, n int, within, quiet time.Duration) []*paho.Publish {
	var got []*paho.Publish
	deadline := time.After(within)
	for len(got) < n {
		select {
		case p := <-c.Received:
			got = append(got, p)
		case <-deadline:
			return got
		}
	}
	for {
		select {
		case p := <-c.Received:
			got = append(got, p)
		case <-time.After(quiet):
			return got
		}
	}
}

// inOrderOnce checks that got holds, per topic, payloads from..to-1 each once and in order.
func inOrderOnce(t *testing.T, got []*paho.Publish, want map[string][2]int) {
	t.Helper()
	next := map[string]int{}
	for topic, r := range want {
		next[topic] = r[0]
	}
	for _, p := range got {
		r, ok := want[p.Topic]
		if !ok {
			t.Fatalf("unexpected message on %q: %q", p.Topic, p.Payload)
		}
		if string(p.Payload) != fmt.Sprint(next[p.Topic]) {
			t.Fatalf("%s: got %q, want %d (out of order, duplicated or lost)", p.Topic, p.Payload, next[p.Topic])
		}
		next[p.Topic]++
		_ = r
	}
	for topic, r := range want {
		if next[topic] != r[1] {
			t.Fatalf("%s: received up to %d, want up to %d", topic, next[topic], r[1])
		}
	}
}

// TestSessionMovesToAnotherNode: a persistent session that goes offline on A resumes on B with Session
// Present, its subscription (and identifier), and every message published meanwhile on either node, in order,
// once; a topic its ACL does not let it read is not replayed. A holds no copy of it any more, and new messages
// reach it live on B.
func TestSessionMovesToAnotherNode(t *testing.T) {
	nodes, _ := startCluster(t, 2)
	mA, _ := sessionNode(t, nodes[0])
	mB, _ := sessionNode(t, nodes[1])

	sub, _ := persistentClient(t, mA.TCP, "mover", true)
	id := 7
	if _, err := sub.Subscribe(context.Background(), &paho.Subscribe{Properties: &paho.SubscribeProperties{SubscriptionIdentifier: &id},
		Subscriptions: []paho.SubscribeOptions{{Topic: "q/#", QoS: 1}, {Topic: "secret/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	pubA, _ := persistentClient(t, mA.TCP, "pub-a", true)
	pubB, _ := persistentClient(t, mB.TCP, "pub-b", true)
	publishN(t, pubA, "q/a", 0, 5)
	inOrderOnce(t, collect(sub, 5, 10*time.Second, 300*time.Millisecond), map[string][2]int{"q/a": {0, 5}})
	if err := sub.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, func() bool { _, ok := mA.Server.Clients.Get("mover"); return !ok },
		"A still holds the offline session")

	publishN(t, pubA, "q/a", 5, 400)
	publishN(t, pubB, "q/b", 0, 300)
	publishN(t, pubA, "secret/x", 0, 3)

	moved, ca := persistentClient(t, mB.TCP, "mover", false)
	if !ca.SessionPresent {
		t.Fatal("CONNACK on B: session present = false, want true")
	}
	got := collect(moved, 695, 30*time.Second, 500*time.Millisecond)
	inOrderOnce(t, got, map[string][2]int{"q/a": {5, 400}, "q/b": {0, 300}})
	if p := got[0].Properties; p == nil || p.SubscriptionIdentifier == nil || *p.SubscriptionIdentifier != 7 {
		t.Fatalf("replayed message lost its subscription identifier: %+v", p)
	}
	publishN(t, pubA, "q/a", 400, 410)
	publishN(t, pubB, "q/b", 300, 310)
	inOrderOnce(t, collect(moved, 20, 10*time.Second, 300*time.Millisecond), map[string][2]int{"q/a": {400, 410}, "q/b": {300, 310}})
}

// TestSessionHandOverUnderLoad: publishers on both nodes keep publishing while the session resumes on B;
// each of their messages reaches it exactly once and in order, across the replay and live delivery.
func TestSessionHandOverUnderLoad(t *testing.T) {
	nodes, _ := startCluster(t, 2)
	mA, _ := sessionNode(t, nodes[0])
	mB, _ := sessionNode(t, nodes[1])
	sub, _ := persistentClient(t, mA.TCP, "busy", true)
	sub.SubscribeQoS1(t, "load/#")
	if err := sub.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatal(err)
	}
	pubA, _ := persistentClient(t, mA.TCP, "load-a", true)
	pubB, _ := persistentClient(t, mB.TCP, "load-b", true)
	const n = 1500
	var wg sync.WaitGroup
	wg.Go(func() { publishN(t, pubA, "load/a", 0, n) })
	wg.Go(func() { publishN(t, pubB, "load/b", 0, n) })
	time.Sleep(300 * time.Millisecond) // some queued, the rest published during the resume
	moved, ca := persistentClient(t, mB.TCP, "busy", false)
	if !ca.SessionPresent {
		t.Fatal("session present = false")
	}
	wg.Wait()
	got := collect(moved, 2*n, 60*time.Second, time.Second)
	t.Logf("B dropped: inflight quota %d, outbound queue %d", mB.Server.Info.InflightDropped, mB.Server.Info.MessagesDropped)
	inOrderOnce(t, got, map[string][2]int{"load/a": {0, n}, "load/b": {0, n}})
}

// TestSessionCleanStartEnds: a clean start ends the session in the cluster: no Session Present, no queued
// message, no record left.
func TestSessionCleanStartEnds(t *testing.T) {
	nodes, _ := startCluster(t, 2)
	mA, _ := sessionNode(t, nodes[0])
	mB, _ := sessionNode(t, nodes[1])
	sub, _ := persistentClient(t, mA.TCP, "fresh", true)
	sub.SubscribeQoS1(t, "c/#")
	if err := sub.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatal(err)
	}
	pub, _ := persistentClient(t, mA.TCP, "pub-c", true)
	publishN(t, pub, "c/x", 0, 3)
	again, ca := persistentClient(t, mB.TCP, "fresh", true)
	if ca.SessionPresent {
		t.Fatal("clean start: session present = true")
	}
	if got := collect(again, 1, 2*time.Second, 0); len(got) != 0 {
		t.Fatalf("clean start received %q", got[0].Payload)
	}
	e, err := nodes[1].b.sessions.Get(context.Background(), ClientKey("fresh"))
	if err == nil {
		var rec sessionRecord
		_ = json.Unmarshal(e.Value(), &rec)
		if len(rec.Subs) != 0 {
			t.Fatalf("the old session's record survived a clean start: %+v", rec)
		}
	}
}

// TestSessionRecordCursor: after a clean disconnect the record holds the subscription and a cursor at or
// past the last message the client acknowledged, so moving replays nothing twice.
func TestSessionRecordCursor(t *testing.T) {
	nodes := startSolo(t)
	mA, _ := sessionNode(t, nodes[0])
	sub, _ := persistentClient(t, mA.TCP, "cur", true)
	sub.SubscribeQoS1(t, "k/+")
	pub, _ := persistentClient(t, mA.TCP, "pub-k", true)
	publishN(t, pub, "k/1", 0, 20)
	if got := collect(sub, 20, 10*time.Second, 200*time.Millisecond); len(got) != 20 {
		t.Fatalf("received %d of 20", len(got))
	}
	if err := sub.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatal(err)
	}
	var rec sessionRecord
	testkit.Eventually(t, 5*time.Second, func() bool {
		e, err := nodes[0].b.sessions.Get(context.Background(), ClientKey("cur"))
		return err == nil && json.Unmarshal(e.Value(), &rec) == nil && rec.Disconnected != 0
	}, "no record written at disconnect")
	info, err := nodes[0].b.stream.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rec.Cursor < info.State.LastSeq || len(rec.Subs) != 1 || rec.Subs[0].Filter != "k/+" || rec.Subs[0].QoS != 1 {
		t.Fatalf("record %+v; want cursor >= %d and subscription k/+ QoS 1", rec, info.State.LastSeq)
	}
}

func TestDisjointSubjects(t *testing.T) {
	all := []string{SubjectPrefix + ">", LongSubjectPrefix + ">"}
	tests := []struct {
		name string
		in   []string
		want []string
	}{
		{"distinct", []string{"idmq.m.a", "idmq.m.b"}, []string{"idmq.m.a", "idmq.m.b"}},
		{"covered dropped", []string{"idmq.m.a.x", "idmq.m.a.>"}, []string{"idmq.m.a.>"}},
		{"equal kept once", []string{"idmq.m.a.*", "idmq.m.a.*"}, []string{"idmq.m.a.*"}},
		{"overlap without cover", []string{"idmq.m.a.*.c", "idmq.m.a.b.*"}, all},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := disjointSubjects(tt.in)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestSessionExpiry: a message whose expiry passed while the session was offline is not replayed; a session
// whose own expiry passed is not resumed (no Session Present, nothing queued).
func TestSessionExpiry(t *testing.T) {
	nodes, _ := startCluster(t, 2)
	mA, _ := sessionNode(t, nodes[0])
	mB, _ := sessionNode(t, nodes[1])
	sub, _ := persistentClient(t, mA.TCP, "exp", true)
	sub.SubscribeQoS1(t, "e/#")
	if err := sub.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatal(err)
	}
	pub, _ := persistentClient(t, mA.TCP, "pub-e", true)
	short := uint32(1)
	if _, err := pub.Publish(context.Background(), &paho.Publish{Topic: "e/short", QoS: 1, Payload: []byte("gone"),
		Properties: &paho.PublishProperties{MessageExpiry: &short}}); err != nil {
		t.Fatal(err)
	}
	publishN(t, pub, "e/kept", 0, 1)
	time.Sleep(2100 * time.Millisecond)
	moved, ca := persistentClient(t, mB.TCP, "exp", false)
	if !ca.SessionPresent {
		t.Fatal("session present = false")
	}
	inOrderOnce(t, collect(moved, 1, 10*time.Second, 500*time.Millisecond), map[string][2]int{"e/kept": {0, 1}})

	one := uint32(1)
	brief, _, err := testkit.ConnectV5(t, testkit.DialTCP(t, mA.TCP), &paho.Connect{ClientID: "brief", CleanStart: true,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &one}})
	if err != nil {
		t.Fatal(err)
	}
	brief.SubscribeQoS1(t, "e/#")
	if err := brief.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatal(err)
	}
	publishN(t, pub, "e/kept", 1, 2)
	time.Sleep(2100 * time.Millisecond)
	late, ca := persistentClient(t, mB.TCP, "brief", false)
	if ca.SessionPresent {
		t.Fatal("an expired session was resumed")
	}
	if got := collect(late, 1, time.Second, 0); len(got) != 0 {
		t.Fatalf("an expired session's queue was delivered: %q", got[0].Payload)
	}
}

// TestSessionLocalTakeover: the same client connecting again to the same node while connected takes the live
// session over (Session Present, its subscription, DISCONNECT 0x8E for the old connection); the record keeps
// the subscription, so the session still moves to another node afterwards.
func TestSessionLocalTakeover(t *testing.T) {
	nodes, _ := startCluster(t, 2)
	mA, _ := sessionNode(t, nodes[0])
	mB, _ := sessionNode(t, nodes[1])
	first, _ := persistentClient(t, mA.TCP, "twice", true)
	first.SubscribeQoS1(t, "tw/#")
	second, ca := persistentClient(t, mA.TCP, "twice", false)
	if !ca.SessionPresent {
		t.Fatal("local takeover: session present = false")
	}
	if d := first.NextDisconnect(t, 5*time.Second); d.ReasonCode != packets.ErrSessionTakenOver.Code {
		t.Fatalf("old connection ended with 0x%02x", d.ReasonCode)
	}
	pub, _ := persistentClient(t, mB.TCP, "pub-tw", true)
	publishN(t, pub, "tw/x", 0, 3)
	inOrderOnce(t, collect(second, 3, 10*time.Second, 300*time.Millisecond), map[string][2]int{"tw/x": {0, 3}})
	if err := second.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatal(err)
	}
	publishN(t, pub, "tw/x", 3, 6)
	third, ca := persistentClient(t, mB.TCP, "twice", false)
	if !ca.SessionPresent {
		t.Fatal("session present = false on B")
	}
	inOrderOnce(t, collect(third, 3, 10*time.Second, 300*time.Millisecond), map[string][2]int{"tw/x": {3, 6}})
}

package cluster

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// issueTopics are the topic shapes issue 18 names: '.', spaces, '*', '>', empty levels, non-ASCII, '$'.
var issueTopics = []string{
	"plain/topic", "a.b/c.d", "with space/x y", "*", "a/*/b", ">", "a/>", "/", "a//b", "/leading", "trailing/",
	"café/日本/🙂", "$SYS/x", "+/#", "a_2eb", "_", strings.Repeat("long/", 400) + "end",
}

// TestRoutingAcrossNodes: what node A publishes reaches B's and C's consumers exactly once, in order per topic, with
// every field intact, and never A's own consumer; the same for B.
func TestRoutingAcrossNodes(t *testing.T) {
	nodes, _ := startCluster(t, 3)
	a, b, c := nodes[0], nodes[1], nodes[2]
	recs := []*recorder{consume(t, a, ConsumeOptions{}), consume(t, b, ConsumeOptions{}), consume(t, c, ConsumeOptions{})}
	ctx := context.Background()

	full := Message{Topic: "props/é", Payload: []byte("x"), QoS: 2, Retain: true, ClientID: "pub-1",
		PayloadFormat: 1, HasPayloadFormat: true, MessageExpiry: 60, ContentType: "text/plain",
		ResponseTopic: "re/ply", CorrelationData: []byte{9, 8}, UserProperties: []UserProperty{{"k", "v"}, {"k", "w"}}}
	var sent []Message
	if _, err := a.Publish(ctx, &full); err != nil {
		t.Fatal(err)
	}
	sent = append(sent, full)
	for i, topic := range issueTopics {
		m := Message{Topic: topic, Payload: fmt.Appendf(nil, "sync %d", i), QoS: 1}
		if _, err := a.Publish(ctx, &m); err != nil {
			t.Fatalf("publish to %q: %v", topic, err)
		}
		sent = append(sent, m)
	}
	var acks []*Ack
	for i := range 300 {
		m := Message{Topic: issueTopics[i%len(issueTopics)], Payload: fmt.Appendf(nil, "async %d", i)}
		ack, err := a.PublishAsync(&m)
		if err != nil {
			t.Fatal(err)
		}
		acks = append(acks, ack)
		sent = append(sent, m)
	}
	waitAcksInOrder(t, acks)
	fromB := Message{Topic: "from/b", Payload: []byte("b")}
	if _, err := b.Publish(ctx, &fromB); err != nil {
		t.Fatal(err)
	}

	for i, want := range [][]Message{{fromB}, sent, append(append([]Message(nil), sent...), fromB)} {
		node := nodes[i].Node()
		got := recs[i].waitFor(t, len(want), 10*time.Second)
		if len(got) != len(want) {
			t.Fatalf("%s received %d messages, want %d", node, len(got), len(want))
		}
		// Per topic in publish order (messages of one topic may share a stream message; topics may interleave
		// differently from how they were published).
		wantOf := map[string][]Message{}
		for _, w := range want {
			wantOf[w.Topic] = append(wantOf[w.Topic], w)
		}
		for j, d := range got {
			if len(wantOf[d.Topic]) == 0 {
				t.Fatalf("%s message %d: unexpected %q %q", node, j, d.Topic, d.Payload)
			}
			w := wantOf[d.Topic][0]
			wantOf[d.Topic] = wantOf[d.Topic][1:]
			if string(d.Payload) != string(w.Payload) || d.QoS != w.QoS {
				t.Fatalf("%s message %d on %q: got %q QoS %d, want %q QoS %d",
					node, j, d.Topic, d.Payload, d.QoS, w.Payload, w.QoS)
			}
			if j > 0 && (d.Seq < got[j-1].Seq || d.Seq == got[j-1].Seq && !got[j-1].More) {
				t.Fatalf("%s: sequence %d after %d", node, d.Seq, got[j-1].Seq)
			}
			if d.Origin == node {
				t.Fatalf("%s received its own message %d", node, j)
			}
		}
	}
	// Every field survives the trip.
	d := recs[2].snapshot()[0]
	w := full
	w.Origin, w.Created = a.Node(), d.Created
	if !reflect.DeepEqual(d.Message, w) || time.Since(d.Created) > time.Minute {
		t.Fatalf("fields changed on the way:\n got %+v\nwant %+v", d.Message, w)
	}
}

// TestConsumeReplayAndFilter: a consumer started at a sequence replays from there (own messages included when
// asked: a persistent session's queue), subject filters narrow per level, and one node runs several consumers.
func TestConsumeReplayAndFilter(t *testing.T) {
	nodes, _ := startCluster(t, 3)
	a, b := nodes[0], nodes[1]
	ctx := context.Background()
	var seqs []uint64
	for i := range 10 {
		topic := fmt.Sprintf("sensors/s%d/temp", i%3)
		seq, err := a.Publish(ctx, &Message{Topic: topic, Payload: fmt.Appendf(nil, "%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, seq)
	}
	if _, err := b.Publish(ctx, &Message{Topic: "other/x"}); err != nil {
		t.Fatal(err)
	}

	replay := consume(t, a, ConsumeOptions{StartSeq: seqs[4], IncludeOwn: true})
	got := replay.waitFor(t, 7, 5*time.Second)
	if len(got) != 7 || got[0].Seq != seqs[4] || string(got[0].Payload) != "4" || got[6].Topic != "other/x" {
		t.Fatalf("replay from %d: got %d messages starting %+v", seqs[4], len(got), got[0])
	}

	// A second consumer on the same node, beside the first.
	filtered := consume(t, a, ConsumeOptions{StartSeq: 1, IncludeOwn: true, Filters: FilterSubjects("sensors/s1/+")})
	got = filtered.waitFor(t, 3, 5*time.Second)
	if len(got) != 3 {
		t.Fatalf("filter sensors/s1/+: got %d messages, want 3", len(got))
	}
	for _, d := range got {
		if d.Topic != "sensors/s1/temp" {
			t.Fatalf("filter sensors/s1/+ delivered %q", d.Topic)
		}
	}
}

// TestConsumerReplacesStalledOrderedConsumer: when the ordered consumer under a routing Consumer stops
// delivering while the stream goes on (seen after a SIGKILL of the stream leader's node), the watchdog replaces
// it from the next sequence: every message arrives, once, in order.
func TestConsumerReplacesStalledOrderedConsumer(t *testing.T) {
	nodes, _ := startCluster(t, 2)
	a, b := nodes[0], nodes[1]
	rec := newRecorder()
	k, err := b.Consume(context.Background(), ConsumeOptions{}, rec.add)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Stop)
	ctx := context.Background()
	publish := func(from, to int) {
		for i := from; i < to; i++ {
			if _, err := a.Publish(ctx, &Message{Topic: "stall/x", Payload: fmt.Appendf(nil, "%d", i)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	publish(0, 10)
	rec.waitFor(t, 10, 10*time.Second)

	// The stall: the ordered consumer stops without the Consumer knowing, as nats.go's did.
	k.mu.Lock()
	k.cc.Stop()
	k.mu.Unlock()
	publish(10, 30)
	got := rec.waitFor(t, 30, 30*time.Second)
	if k.Restarts() != 1 {
		t.Fatalf("restarts = %d, want 1", k.Restarts())
	}
	for i, d := range got {
		if string(d.Payload) != fmt.Sprint(i) {
			t.Fatalf("delivery %d is %q: want every message once, in order", i, d.Payload)
		}
	}
	if len(got) != 30 {
		t.Fatalf("%d deliveries, want 30", len(got))
	}
}

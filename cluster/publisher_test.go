package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/idmq/idmq/internal/testkit"
)

// streamMsgs is the number of messages in the stream now.
func streamMsgs(t *testing.T, c *Cluster) uint64 {
	t.Helper()
	info, err := c.b.stream.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// TestPublishAsyncBatchesOneSubject: messages of one topic published while an earlier one is on its way go
// together in fewer stream messages; another node's consumer gets each message once, per topic in publish
// order, every message with the sequence its Ack returned and More set on all but the last of a batch. QoS 2
// and DedupID messages are never batched.
func TestPublishAsyncBatchesOneSubject(t *testing.T) {
	nodes, _ := startCluster(t, 3)
	a := nodes[0]
	rec := consume(t, nodes[1], ConsumeOptions{})
	before := streamMsgs(t, a)

	const n = 1200
	acks := make([]*Ack, n)
	alone := map[int]bool{}
	for i := range acks {
		m := &Message{Topic: "batch/" + strconv.Itoa(i%2), Payload: []byte(strconv.Itoa(i)), QoS: 1}
		switch {
		case i%97 == 0:
			m.QoS = 2
			alone[i] = true
		case i%101 == 0:
			m.DedupID = "dedup-" + strconv.Itoa(i)
			alone[i] = true
		}
		var err error
		if acks[i], err = a.PublishAsync(m); err != nil {
			t.Fatal(err)
		}
	}
	seqs := waitAcksInOrder(t, acks)
	stored := streamMsgs(t, a) - before
	if stored >= n/2 {
		t.Fatalf("%d messages took %d stream messages: not batched", n, stored)
	}
	bySeq := map[uint64][]int{}
	for i, s := range seqs {
		bySeq[s] = append(bySeq[s], i)
	}
	for i := range alone {
		if len(bySeq[seqs[i]]) != 1 {
			t.Errorf("message %d (QoS 2 or DedupID) shares stream message %d with %v", i, seqs[i], bySeq[seqs[i]])
		}
	}

	got := rec.waitFor(t, n, 30*time.Second)
	if len(got) != n {
		t.Fatalf("consumer got %d deliveries, want %d", len(got), n)
	}
	next := map[string]int{"batch/0": 0, "batch/1": 1}
	for k, d := range got {
		i, _ := strconv.Atoi(string(d.Payload))
		if i != next[d.Topic] {
			t.Fatalf("delivery %d: %s %q, want %d (lost, duplicated or out of order)", k, d.Topic, d.Payload, next[d.Topic])
		}
		next[d.Topic] += 2
		if d.Seq != seqs[i] {
			t.Fatalf("message %d delivered with sequence %d, its ack said %d", i, d.Seq, seqs[i])
		}
		last := k+1 == len(got) || got[k+1].Seq != d.Seq
		if d.More == last {
			t.Fatalf("message %d: More = %v, last of its stream message = %v", i, d.More, last)
		}
		if want := d.Seq - map[bool]uint64{true: 1, false: 0}[d.More]; d.Through() != want {
			t.Fatalf("message %d: Through %d, want %d", i, d.Through(), want)
		}
	}
}

// TestHookBatchesReachSubscribersOnce: several publishers on node A publishing on one topic at QoS 0, 1 and 2
// fill fewer stream messages than messages, and node B's subscriber gets every message once, each publisher's
// in the order it published them.
func TestHookBatchesReachSubscribersOnce(t *testing.T) {
	nodes, _ := startCluster(t, 2)
	sA, _ := mochiNode(t, nodes[0])
	sB, _ := mochiNode(t, nodes[1])
	var atB inbox
	atB.subscribe(t, sB, "hb/#", 1)

	const publishers, each = 6, 150
	before := streamMsgs(t, nodes[0])
	var wg sync.WaitGroup
	for p := range publishers {
		cl := sA.NewClient(nil, "local", fmt.Sprintf("pub-%d", p), true)
		qos := byte(p % 3)
		wg.Go(func() {
			for i := range each {
				pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos},
					TopicName: "hb/x", Payload: fmt.Appendf(nil, "%d/%d", p, i)}
				if qos > 0 {
					pk.PacketID = uint16(i + 1)
				}
				if err := sA.InjectPacket(cl, pk); err != nil {
					t.Errorf("publisher %d: %v", p, err)
					return
				}
			}
		})
	}
	wg.Wait()
	const total = publishers * each
	eventually(t, 20*time.Second, "every message on B", func() bool { return len(atB.all()) >= total })
	time.Sleep(500 * time.Millisecond) // duplicates would arrive meanwhile
	if stored := streamMsgs(t, nodes[0]) - before; stored >= total {
		t.Fatalf("%d messages took %d stream messages: not batched", total, stored)
	}
	got := atB.all()
	if len(got) != total {
		t.Fatalf("B got %d messages, want %d", len(got), total)
	}
	next := make([]int, publishers)
	for _, pk := range got {
		var p, i int
		if _, err := fmt.Sscanf(string(pk.Payload), "%d/%d", &p, &i); err != nil || p >= publishers {
			t.Fatalf("unexpected payload %q", pk.Payload)
		}
		if i != next[p] || pk.FixedHeader.Qos != byte(p%3) {
			t.Fatalf("publisher %d (QoS %d): got %d at QoS %d, want %d", p, p%3, i, pk.FixedHeader.Qos, next[p])
		}
		next[p]++
	}
}

// TestSessionResumesBatchesWhole: a persistent session that disconnects while batches stream in, and resumes
// on another node, gets every message: its cursor never names a stream message it received only part of, so
// each message after the cursor is replayed (in order, from where the cursor stands) and each one up to the
// cursor was received before.
func TestSessionResumesBatchesWhole(t *testing.T) {
	nodes, _ := startCluster(t, 3)
	mA, _ := sessionNode(t, nodes[0])
	mB, _ := sessionNode(t, nodes[1])
	sub, _ := persistentClient(t, mA.TCP, "batched", true)
	sub.SubscribeQoS1(t, "sb/#")

	const n = 1500
	seqs := make([]uint64, n)
	published := make(chan struct{})
	go func() { // from the third node, which has no MQTT server: batches of another node for A and B
		defer close(published)
		acks := make([]*Ack, n)
		for i := range acks {
			var err error
			if acks[i], err = nodes[2].PublishAsync(&Message{Topic: "sb/x", QoS: 1, Payload: []byte(strconv.Itoa(i))}); err != nil {
				t.Error(err)
				return
			}
		}
		for i, ack := range acks {
			seqs[i], _ = ack.Wait(context.Background())
		}
	}()
	first := map[int]bool{}
	for len(first) < n/4 {
		select {
		case p := <-sub.Received:
			i, _ := strconv.Atoi(string(p.Payload))
			first[i] = true
		case <-time.After(20 * time.Second):
			t.Fatalf("received %d of %d before disconnecting", len(first), n/4)
		}
	}
	if err := sub.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatal(err)
	}
	for _, p := range collect(sub, 0, 0, 300*time.Millisecond) { // received (and acknowledged) before the end
		i, _ := strconv.Atoi(string(p.Payload))
		first[i] = true
	}
	<-published
	var rec sessionRecord
	testkit.Eventually(t, 5*time.Second, func() bool {
		e, err := nodes[0].b.sessions.Get(context.Background(), ClientKey("batched"))
		return err == nil && json.Unmarshal(e.Value(), &rec) == nil && rec.Disconnected != 0
	}, "no record written at disconnect")
	for i, s := range seqs {
		if s <= rec.Cursor && !first[i] {
			t.Fatalf("message %d (sequence %d) is behind the cursor %d but was never received", i, s, rec.Cursor)
		}
	}

	again, ca := persistentClient(t, mB.TCP, "batched", false)
	if !ca.SessionPresent {
		t.Fatal("session not resumed")
	}
	start := -1
	for i, s := range seqs {
		if s > rec.Cursor {
			start = i
			break
		}
	}
	if start < 0 {
		return // the cursor covers everything: nothing to replay
	}
	inOrderOnce(t, collect(again, n-start, 30*time.Second, 500*time.Millisecond), map[string][2]int{"sb/x": {start, n}})
}

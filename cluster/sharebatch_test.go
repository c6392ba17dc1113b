package cluster

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"
)

// TestSharedGroupGetsBatchesOnce: batches larger than a member's window, pulled by a group with members on two
// nodes, reach the group each message once, and the group's consumer has nothing left unacknowledged.
func TestSharedGroupGetsBatchesOnce(t *testing.T) {
	nodes, _ := startCluster(t, 2)
	mA, _ := listeningNode(t, nodes[0])
	mB, _ := listeningNode(t, nodes[1])
	group := newTally()
	for i, addr := range []string{mA.TCP, mA.TCP, mB.TCP} {
		member(t, addr, fmt.Sprintf("bm%d", i), "$share/bg/sb/#", group, false)
	}
	waitPulling(t, nodes[0], "bg", "sb/#", 3)

	const n = 2000 // a client's publishes (with a client id: one without is mochi's own, shared locally)
	before := streamMsgs(t, nodes[0])
	acks := make([]*Ack, n)
	for i := range acks {
		var err error
		if acks[i], err = nodes[0].PublishAsync(&Message{Topic: "sb/x", QoS: 1, ClientID: "pub", Payload: []byte(strconv.Itoa(i))}); err != nil {
			t.Fatal(err)
		}
	}
	waitAcksInOrder(t, acks)
	if stored := streamMsgs(t, nodes[0]) - before; stored > n/4 {
		t.Fatalf("%d messages took %d stream messages: too few batches to test", n, stored)
	}
	eventually(t, 30*time.Second, "every message to the group", func() bool { return group.total() >= n })
	time.Sleep(time.Second) // duplicates would arrive meanwhile
	group.mu.Lock()
	if len(group.got) != n {
		t.Fatalf("the group received %d distinct messages of %d", len(group.got), n)
	}
	for p, by := range group.got {
		times := 0
		for _, k := range by {
			times += k
		}
		if times != 1 {
			t.Fatalf("message %s delivered %d times: %v", p, times, by)
		}
	}
	t.Logf("per member %v", group.per)
	group.mu.Unlock()
	eventually(t, 10*time.Second, "every batch acknowledged to JetStream", func() bool {
		cons, err := nodes[0].b.stream.Consumer(context.Background(), ShareConsumerName("bg", "sb/#"))
		if err != nil {
			return false
		}
		info, err := cons.Info(context.Background())
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0
	})
}

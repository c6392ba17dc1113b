package cluster

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

func waitAcksInOrder(t testing.TB, acks []*Ack) []uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	seqs := make([]uint64, len(acks))
	for i, ack := range acks {
		seq, err := ack.Wait(ctx)
		if err != nil {
			t.Fatalf("ack %d: %v", i, err)
		}
		seqs[i] = seq
	}
	return seqs
}

// TestPublishAsyncOrder: a publisher pipelining many messages gets one ack each, in the order sent, with
// stream sequences that never go back and leave no gap (batches share one), and a second Wait returns the same
// answer; the last stream message ends with the last message sent.
func TestPublishAsyncOrder(t *testing.T) {
	nodes, _ := startCluster(t, 3)
	a := nodes[0]
	first, err := a.Publish(context.Background(), &Message{Topic: "order/start"})
	if err != nil {
		t.Fatal(err)
	}
	const n = 2000
	acks := make([]*Ack, n)
	for i := range acks {
		acks[i], err = a.PublishAsync(&Message{Topic: "order/x", Payload: fmt.Appendf(nil, "%d", i), QoS: 1})
		if err != nil {
			t.Fatal(err)
		}
	}
	seqs := waitAcksInOrder(t, acks)
	prev := first
	for i, s := range seqs {
		if s != prev && s != prev+1 {
			t.Fatalf("ack %d has sequence %d after %d", i, s, prev)
		}
		prev = s
	}
	if again, err := acks[7].Wait(context.Background()); err != nil || again != seqs[7] {
		t.Fatalf("second Wait = %d, %v; want %d", again, err, seqs[7])
	}
	// The stored message is what was sent.
	raw, err := a.b.stream.GetMsg(context.Background(), seqs[n-1])
	if err != nil {
		t.Fatal(err)
	}
	var m Message
	err = decodeMessages(raw.Data, func(dm Message, _ bool) { m = dm })
	if err != nil || string(m.Payload) != fmt.Sprint(n-1) || raw.Subject != TopicSubject("order/x") {
		t.Fatalf("stored %q on %q: %v", m.Payload, raw.Subject, err)
	}
}

// TestPublishWhenClosed: a one-node cluster publishes (and drops a re-sent duplicate); once it left, it refuses
// publishes with ErrNotReady instead of hanging.
func TestPublishWhenClosed(t *testing.T) {
	cfg := Config{Node: "solo"}
	cfg.SetDefaults(t.TempDir())
	c, err := Start(context.Background(), cfg, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Publish(context.Background(), &Message{Topic: "t"}); err != nil {
		t.Fatalf("one-node cluster: %v", err)
	}
	// A message re-sent with the same DedupID (its ack was lost) is stored once.
	m := &Message{Topic: "t", Payload: []byte("once"), DedupID: "node-1/conn-7/42"}
	s1, err1 := c.Publish(context.Background(), m)
	s2, err2 := c.Publish(context.Background(), m)
	other, err3 := c.Publish(context.Background(), &Message{Topic: "t", DedupID: "node-1/conn-7/43"})
	if err1 != nil || err2 != nil || err3 != nil || s1 != s2 || other != s1+1 {
		t.Fatalf("dedup: seqs %d %d %d, errs %v %v %v; want the same twice, then the next", s1, s2, other, err1, err2, err3)
	}
	c.Close()
	if _, err := c.Publish(context.Background(), &Message{Topic: "t"}); !errors.Is(err, ErrNotReady) {
		t.Fatalf("Publish after Close: %v, want ErrNotReady", err)
	}
	if _, err := c.PublishAsync(&Message{Topic: "t"}); !errors.Is(err, ErrNotReady) {
		t.Fatalf("PublishAsync after Close: %v, want ErrNotReady", err)
	}
}

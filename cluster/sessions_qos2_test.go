package cluster

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// logOnNode is a qos2Log writing to the idmq-qos2 bucket of a real one-node cluster under key, counting writes.
func logOnNode(t *testing.T, c *Cluster, key string) (*qos2Log, *atomic.Int64) {
	t.Helper()
	var puts atomic.Int64
	q := newQoS2Log(func(ctx context.Context, data []byte) error {
		puts.Add(1)
		_, err := c.b.qos2.Put(ctx, key, data)
		return err
	}, c.opts.OpTimeout)
	return q, &puts
}

func stored(t *testing.T, c *Cluster, key string) []*qos2Entry {
	t.Helper()
	entries, err := loadQoS2(context.Background(), c.b.qos2, key)
	if err != nil {
		t.Fatal(err)
	}
	return entries
}

// TestQoS2LogCoalescesWrites: deliveries recorded while a write is in flight go in the next one, so 500
// deliveries of one session are stored in far fewer than 500 writes, and each waiter returns once its own
// delivery is stored.
func TestQoS2LogCoalescesWrites(t *testing.T) {
	nodes := startSolo(t)
	q, puts := logOnNode(t, nodes[0], "coalesce")
	const n = 500
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			id := uint16(i + 1)
			q.sent(id, uint64(i+1), fingerprint("pub", "t", 0, fmt.Appendf(nil, "%d", i)))
			errs <- q.await(id)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := len(stored(t, nodes[0], "coalesce")); got != n {
		t.Fatalf("%d deliveries stored, want %d", got, n)
	}
	t.Logf("%d deliveries in %d writes", n, puts.Load())
	if puts.Load() > n/5 {
		t.Fatalf("%d writes for %d deliveries: not coalesced", puts.Load(), n)
	}
}

// TestQoS2LogStates: a PUBREC's PUBREL runs only once the released state is stored; a completed entry stays
// until a stored cursor covers it (a routed one by its sequence, a local one by time), and the stored form
// reads back as written.
func TestQoS2LogStates(t *testing.T) {
	nodes := startSolo(t)
	c := nodes[0]
	q, _ := logOnNode(t, c, "states")
	fpRouted, fpLocal := fingerprint("b", "x", 1, []byte("r")), fingerprint("a", "x", 1, []byte("l"))
	q.sent(1, 40, fpRouted)
	q.sent(2, 0, fpLocal)
	released := make(chan []*qos2Entry, 1)
	if !q.release(1, func() {
		entries, _ := loadQoS2(context.Background(), c.b.qos2, "states")
		released <- entries
	}) {
		t.Fatal("release of a sent entry refused")
	}
	select {
	case entries := <-released:
		if len(entries) != 2 || entries[0].state != qos2Released || entries[0].seq != 40 || entries[0].fp != fpRouted {
			t.Fatalf("when the PUBREL goes out, the record holds %+v", entries)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the PUBREL never went")
	}
	if q.release(9, func() {}) {
		t.Fatal("release of an unknown id accepted: mochi must answer it")
	}

	q.completed(1)
	q.completed(2)
	q.covered(39, time.Now())
	if err := q.awaitAll(); err != nil {
		t.Fatal(err)
	}
	if got := ids(q); len(got) != 2 {
		t.Fatalf("a cursor before both messages dropped entries: %v left", got)
	}
	q.covered(40, time.Now()) // covers the routed one; the local one completed just now: kept
	if got := ids(q); len(got) != 1 || got[0] != 2 {
		t.Fatalf("after cursor 40: entries %v left, want only the local one (2)", got)
	}
	q.covered(40, time.Now().Add(q.margin+time.Second))
	if err := q.awaitAll(); err != nil {
		t.Fatal(err)
	}
	if got := stored(t, c, "states"); len(got) != 0 {
		t.Fatalf("stored after both were covered: %+v", got)
	}
}

func ids(q *qos2Log) []uint16 {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []uint16
	for _, e := range q.entries {
		out = append(out, e.id)
	}
	return out
}

// TestQoS2RecordForm: every kind of entry reads back as written; a truncated record is an error.
func TestQoS2RecordForm(t *testing.T) {
	q := newQoS2Log(nil, time.Second)
	fp := fingerprint("c", "t", 7, []byte("p"))
	want := []qos2Entry{{id: 1, state: qos2Sent, seq: 300, fp: fp}, {id: 2, state: qos2Released, fp: fp},
		{id: 3, state: qos2Done, seq: 1 << 40, fp: fp}, {id: 65535, state: qos2Done, fp: fp}}
	for _, w := range want {
		q.entries = append(q.entries, &w)
	}
	data := q.encodeLocked()
	got, err := decodeQoS2(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d entries read back, want %d", len(got), len(want))
	}
	for i, w := range want {
		if g := got[i]; g.id != w.id || g.state != w.state || g.seq != w.seq || g.fp != w.fp {
			t.Errorf("entry %d: read %+v, want %+v", i, *g, w)
		}
	}
	if _, err := decodeQoS2(data[:len(data)-3]); err == nil {
		t.Error("a truncated record was read without error")
	}
}

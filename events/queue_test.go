package events

import "testing"

func TestQueueKeepsOrderPerShardAndDropsTheOldest(t *testing.T) {
	q := newQueue(2, 3, func(int) {})
	items := make([]*item, 5)
	for i := range items {
		items[i] = &item{seq: uint64(i + 1)}
	}
	for i, s := range []int{0, 1, 0} {
		if d := q.push(s, items[i]); d != nil {
			t.Fatalf("push %d dropped %d below the bound", i, d.seq)
		}
	}
	// Full: the oldest of all shards (seq 1, shard 0) makes room, then seq 2 (shard 1).
	if d := q.push(1, items[3]); d != items[0] {
		t.Fatalf("dropped %+v, want seq 1", d)
	}
	if d := q.push(1, items[4]); d != items[1] {
		t.Fatalf("dropped %+v, want seq 2", d)
	}
	if q.len() != 3 {
		t.Fatalf("len %d, want 3", q.len())
	}
	if h := q.head(0); h != items[2] {
		t.Fatalf("shard 0 head %+v, want seq 3", h)
	}
	if q.pop(0, items[0]) {
		t.Fatal("popped an item that was dropped")
	}
	if !q.pop(1, items[3]) || q.head(1) != items[4] || !q.pop(1, items[4]) || q.head(1) != nil {
		t.Fatal("shard 1 did not give seq 4 then 5")
	}
	if got := q.drain(); len(got) != 1 || got[0] != items[2] || q.len() != 0 {
		t.Fatalf("drain = %v", got)
	}
}

func TestShardOfIsStable(t *testing.T) {
	q1, q2 := newQueue(8, 1, func(int) {}), newQueue(8, 1, func(int) {})
	spread := map[int]bool{}
	for _, id := range []string{"alice-phone", "bob", "", "device-42", "x", "y", "z", "w"} {
		if q1.shardOf(id) != q2.shardOf(id) {
			t.Fatalf("client %q moved shard", id)
		}
		spread[q1.shardOf(id)] = true
	}
	if len(spread) < 3 {
		t.Fatalf("8 client ids landed on %d shards", len(spread))
	}
}

package events

import (
	"hash/fnv"
	"sync"
	"time"
)

// item is one event waiting for one webhook.
type item struct {
	seq  uint64    // order of emission on this node; the key it is persisted under
	id   string    // the event's id, repeated in EventIDHeader
	at   time.Time // when the event happened: retry_for counts from here
	body []byte    // the JSON payload, exactly as signed and sent
}

// queue is one webhook's pending events, split into shards by client id. A shard is a FIFO delivered by
// one worker, so the events of one client arrive in the order they happened, while a client whose events
// are being retried holds back only the clients of its shard. The bound is on the whole queue: when it is
// full, the oldest event of any shard makes room.
type queue struct {
	mu     sync.Mutex
	shards [][]*item
	wake   []chan struct{} // one per shard, capacity 1: "look at your head again"
	n      int
	max    int
	depth  func(n int) // told every change of n, under mu, so reports never arrive out of order
}

func newQueue(shards, max int, depth func(int)) *queue {
	q := &queue{shards: make([][]*item, shards), wake: make([]chan struct{}, shards), max: max, depth: depth}
	for i := range q.wake {
		q.wake[i] = make(chan struct{}, 1)
	}
	return q
}

// shardOf keeps a client id on one shard for the life of the process and across restarts.
func (q *queue) shardOf(clientID string) int {
	h := fnv.New32a()
	h.Write([]byte(clientID))
	return int(h.Sum32() % uint32(len(q.shards)))
}

// push appends it to shard s and returns the event dropped to make room, if any.
func (q *queue) push(s int, it *item) (dropped *item) {
	q.mu.Lock()
	if q.n >= q.max {
		dropped = q.dropOldestLocked()
	}
	q.shards[s] = append(q.shards[s], it)
	q.n++
	q.depth(q.n)
	q.mu.Unlock()
	select {
	case q.wake[s] <- struct{}{}:
	default:
	}
	return dropped
}

func (q *queue) dropOldestLocked() *item {
	oldest := -1
	for s, sh := range q.shards {
		if len(sh) > 0 && (oldest < 0 || sh[0].seq < q.shards[oldest][0].seq) {
			oldest = s
		}
	}
	if oldest < 0 {
		return nil
	}
	it := q.shards[oldest][0]
	q.removeHeadLocked(oldest)
	return it
}

func (q *queue) removeHeadLocked(s int) {
	q.shards[s][0] = nil
	q.shards[s] = q.shards[s][1:]
	q.n--
	q.depth(q.n)
}

// head is the next event of shard s, or nil.
func (q *queue) head(s int) *item {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.shards[s]) == 0 {
		return nil
	}
	return q.shards[s][0]
}

// pop removes it from the head of shard s; false when it is no longer there (dropped for room meanwhile).
func (q *queue) pop(s int, it *item) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.shards[s]) == 0 || q.shards[s][0] != it {
		return false
	}
	q.removeHeadLocked(s)
	return true
}

// drain empties the queue and returns what it held.
func (q *queue) drain() []*item {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []*item
	for s := range q.shards {
		out = append(out, q.shards[s]...)
		q.shards[s] = nil
	}
	q.n = 0
	q.depth(0)
	return out
}

func (q *queue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}

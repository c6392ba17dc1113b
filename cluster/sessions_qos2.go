package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// qos2Log is the durable record of a persistent session's outbound QoS 2 deliveries (key ClientKey(client id) in
// idmq-qos2), so that a session resumed on another node after this one died delivers each QoS 2 message once
// (MQTT 5, 4.3.3 and 4.4). Without it the replay from the cursor would send a message the client already
// received as a new one.
//
//   - Before a QoS 2 PUBLISH is written to the client, {packet id, message} is stored as sent (the client's write
//     loop waits in OnPacketEncode). On resume a sent entry's message is sent again with the same id and DUP set:
//     a client that had it (PUBREC'd) acknowledges it without delivering it again [MQTT-4.3.3-9].
//   - Before the PUBREL answers the client's PUBREC, the entry is stored as released: the PUBREC is held (see
//     deferPubrec) and the PUBREL sent once stored. On resume a released entry's PUBREL is sent again and its
//     message is not replayed: the client may have completed it and forgotten the id.
//   - A completed entry is dropped once a stored cursor covers its message: the replay never meets it again.
//
// Writes are coalesced: one Put carries every change made while the previous one was in flight, so a session is
// not held to one round trip per message. A message is named by a fingerprint (publishing client, topic, the
// created second the stream's copy carries, payload) and by its stream sequence when this node knows it
// (routed or replayed here).
type qos2Log struct {
	put    func(ctx context.Context, data []byte) error
	wait   time.Duration // how long a delivery waits for its entry to be stored
	margin time.Duration // how long a completed local delivery waits for a stored cursor (see covered)

	mu       sync.Mutex
	owns     func() bool           // this node still holds the client (a session taken over here changes it)
	entries  []*qos2Entry          // in the order delivered (replayed entries keep the order of the record)
	live     map[uint16]*qos2Entry // sent or released, by packet id
	version  uint64                // changes made
	durable  uint64                // changes stored
	flushed  chan struct{}         // closed when durable moves
	writing  bool
	closed   bool
	err      error
	deferred []deferredPubrel

	unmatched atomic.Int32 // entries a replay may still meet
	reserved  atomic.Int32 // ids held in the window for the replay
}

type qos2State byte

const (
	qos2Sent     qos2State = 's'
	qos2Released qos2State = 'r'
	qos2Done     qos2State = 'd'
)

type qos2Entry struct {
	id    uint16
	state qos2State
	seq   uint64   // stream sequence; 0: a local publish, not known when it was delivered
	fp    [16]byte // fingerprint of the message
	ver   uint64   // the change that stored the current state
	done  time.Time
	// During a resume: reserved means the id is held in mochi's window for the replay to send the message
	// again; matched that the replay met it (or that it is newer than the replay: never a match).
	// hold: loaded from the record with no sequence known, kept until a replay met it or ended.
	reserved, matched, hold bool
}

type deferredPubrel struct {
	ver uint64
	fn  func()
}

const putAttempt = time.Second

var errQoS2NotStored = errors.New("cluster: the QoS 2 delivery state was not stored")

func newQoS2Log(put func(context.Context, []byte) error, wait time.Duration) *qos2Log {
	return &qos2Log{put: put, owns: func() bool { return true }, wait: wait, margin: 2 * wait, live: map[uint16]*qos2Entry{},
		flushed: make(chan struct{})}
}

// fingerprint names a message independently of the node that delivers it: a local delivery and the stream's
// copy agree on publishing client, topic, payload and created second (Hook.OnPublish aligns the latter).
func fingerprint(client, topic string, created int64, payload []byte) [16]byte {
	h := sha256.New()
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(client)))
	h.Write(n[:])
	h.Write([]byte(client))
	binary.BigEndian.PutUint64(n[:], uint64(len(topic)))
	h.Write(n[:])
	h.Write([]byte(topic))
	binary.BigEndian.PutUint64(n[:], uint64(created))
	h.Write(n[:])
	h.Write(payload)
	var fp [16]byte
	copy(fp[:], h.Sum(nil))
	return fp
}

// sent records a QoS 2 PUBLISH with id about to be written; a resend of the same message changes nothing.
func (q *qos2Log) sent(id uint16, seq uint64, fp [16]byte) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if e, ok := q.live[id]; ok && e.fp == fp {
		return
	}
	q.version++
	e := &qos2Entry{id: id, state: qos2Sent, seq: seq, fp: fp, ver: q.version, matched: true}
	q.entries = append(q.entries, e)
	q.live[id] = e
	q.kick()
}

// tracks: id is a delivery this log records.
func (q *qos2Log) tracks(id uint16) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	_, ok := q.live[id]
	return ok
}

// await waits until id's entry is stored; nil at once for an id the log does not track.
func (q *qos2Log) await(id uint16) error {
	deadline := time.NewTimer(q.wait)
	defer deadline.Stop()
	for {
		q.mu.Lock()
		e, ok := q.live[id]
		if !ok || e.ver <= q.durable {
			q.mu.Unlock()
			return nil
		}
		ch, err := q.flushed, q.err
		q.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			return fmt.Errorf("%w: %v", errQoS2NotStored, err)
		}
	}
}

// stored: every change made so far is stored.
func (q *qos2Log) stored() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.durable >= q.version
}

// awaitAll waits until every change made so far is stored.
func (q *qos2Log) awaitAll() error {
	deadline := time.NewTimer(q.wait)
	defer deadline.Stop()
	q.mu.Lock()
	v := q.version
	q.mu.Unlock()
	for {
		q.mu.Lock()
		ch, err, done := q.flushed, q.err, q.durable >= v
		q.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-deadline.C:
			return fmt.Errorf("%w: %v", errQoS2NotStored, err)
		}
	}
}

// release stores id as released and runs then once stored; false if id is not a sent entry here (mochi
// answers the PUBREC itself). A repeated PUBREC while the first is being stored runs nothing more.
func (q *qos2Log) release(id uint16, then func()) bool {
	q.mu.Lock()
	e, ok := q.live[id]
	switch {
	case !ok:
		q.mu.Unlock()
		return false
	case e.state == qos2Released && e.ver > q.durable:
		q.mu.Unlock()
		return true // its PUBREL follows once stored
	case e.state == qos2Released:
		q.mu.Unlock()
		then() // stored already (a resumed entry the client acknowledges again)
		return true
	}
	q.version++
	e.state, e.ver = qos2Released, q.version
	q.deferred = append(q.deferred, deferredPubrel{ver: e.ver, fn: then})
	q.kick()
	q.mu.Unlock()
	return true
}

// completed: the client's PUBCOMP ended id's flow. Nothing is written: a released entry keeps its message
// from being replayed until a stored cursor covers it.
func (q *qos2Log) completed(id uint16) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if e, ok := q.live[id]; ok {
		e.state, e.done = qos2Done, time.Now()
		delete(q.live, id)
	}
}

// covered drops completed entries whose message a stored cursor covers: a known sequence up to cursor; a local
// message (sequence unknown) completed margin before the cursor was taken (at), by when it is in the stream
// and the routing consumer passed it. (Should the consumer lag more, a crash then can repeat that message:
// at least once, never lost.)
func (q *qos2Log) covered(cursor uint64, at time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	kept := q.entries[:0]
	for _, e := range q.entries {
		drop := e.state == qos2Done && !e.hold && (e.seq != 0 && e.seq <= cursor || e.seq == 0 && e.done.Before(at.Add(-q.margin)))
		if !drop {
			kept = append(kept, e)
		}
	}
	if len(kept) == len(q.entries) {
		return
	}
	clear(q.entries[len(kept):])
	q.entries = kept
	q.version++
	q.kick()
}

// kick starts the writer if it is not running; q.mu held.
func (q *qos2Log) kick() {
	if !q.writing && !q.closed {
		q.writing = true
		go q.flushLoop()
	}
}

// flushLoop writes the log until it is stored as it stands, then runs the PUBRELs it held.
func (q *qos2Log) flushLoop() {
	for {
		q.mu.Lock()
		if q.durable >= q.version || q.closed {
			q.writing = false
			q.mu.Unlock()
			return
		}
		v, data, owns := q.version, q.encodeLocked(), q.owns
		q.mu.Unlock()
		if !owns() {
			q.fail(errors.New("cluster: this node no longer holds the client"))
			return
		}
		// A short attempt, then another: a write sent to a bucket leader that just died gets no reply, and the
		// next leader is usually elected within a second. Writes of one log are sequential, so none overtakes.
		ctx, cancel := context.WithTimeout(context.Background(), min(q.wait, putAttempt))
		err := q.put(ctx, data)
		cancel()
		if err != nil {
			q.mu.Lock()
			q.err = err
			q.mu.Unlock()
			time.Sleep(50 * time.Millisecond)
			continue
		}
		q.mu.Lock()
		q.durable, q.err = v, nil
		close(q.flushed)
		q.flushed = make(chan struct{})
		var run []func()
		rest := q.deferred[:0]
		for _, d := range q.deferred {
			if d.ver <= v {
				run = append(run, d.fn)
			} else {
				rest = append(rest, d)
			}
		}
		clear(q.deferred[len(rest):])
		q.deferred = rest
		q.mu.Unlock()
		for _, fn := range run {
			fn()
		}
	}
}

func (q *qos2Log) setOwner(owns func() bool) {
	q.mu.Lock()
	q.owns = owns
	q.mu.Unlock()
}

// fail stops writing: waiters time out and end their connection.
func (q *qos2Log) fail(err error) {
	q.mu.Lock()
	q.closed, q.writing, q.err, q.deferred = true, false, err, nil
	q.mu.Unlock()
}

// close waits up to q.wait for the writer, then stops it: a node that gave the client up must not overwrite
// the next owner's record.
func (q *qos2Log) close() {
	deadline := time.Now().Add(q.wait)
	for {
		q.mu.Lock()
		if !q.writing || time.Now().After(deadline) {
			q.closed = true
			q.mu.Unlock()
			return
		}
		q.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
}

// The stored form: version byte 1, then per entry its state byte ('s' sent, 'r' released, 'd' completed),
// packet id (2 bytes), uvarint stream sequence (0: unknown) and 16-byte fingerprint. A message is matched by
// both: one stream message may come to carry several MQTT messages.
const qos2Format = 1

func (q *qos2Log) encodeLocked() []byte {
	b := make([]byte, 0, 1+len(q.entries)*24)
	b = append(b, qos2Format)
	for _, e := range q.entries {
		b = binary.BigEndian.AppendUint16(append(b, byte(e.state)), e.id)
		b = binary.AppendUvarint(b, e.seq)
		b = append(b, e.fp[:]...)
	}
	return b
}

var errQoS2Record = errors.New("cluster: truncated QoS 2 record")

func decodeQoS2(data []byte) ([]*qos2Entry, error) {
	if len(data) == 0 {
		return nil, nil
	}
	if data[0] != qos2Format {
		return nil, fmt.Errorf("cluster: unknown QoS 2 record format %d", data[0])
	}
	var out []*qos2Entry
	for b := data[1:]; len(b) > 0; {
		if len(b) < 3 {
			return nil, errQoS2Record
		}
		e := &qos2Entry{state: qos2State(b[0]), id: binary.BigEndian.Uint16(b[1:])}
		seq, n := binary.Uvarint(b[3:])
		if n <= 0 || len(b) < 3+n+16 {
			return nil, errQoS2Record
		}
		e.seq = seq
		copy(e.fp[:], b[3+n:])
		out = append(out, e)
		b = b[3+n+16:]
	}
	return out, nil
}

// loadQoS2Log reads a session's record; a missing one is empty.
func loadQoS2(ctx context.Context, kv jetstream.KeyValue, key string) ([]*qos2Entry, error) {
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return decodeQoS2(e.Value())
}

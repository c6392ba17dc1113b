package cluster

import (
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// publisher sends a node's asynchronous publishes to the stream, batching adaptively per subject: the first
// message of a subject goes at once; while it is on its way, later messages of the same subject wait and then
// go together, as one stream message (a batch, see encodeBatch), when its ack came back (several stream
// messages back to back when more waited than one batch holds). A lone publisher thus pays no extra latency,
// and under load one JetStream publish, one raft entry, one ack and one delivery per consumer carry many MQTT
// messages instead of one each.
//
// Why per subject: every consumer (the routing consumers, a resumed session's replay, shared groups) filters
// by subject, so a batch must have one; and one goroutine at a time sends a subject's stream messages, in
// order, so the messages of a topic are stored in the order they were published (MQTT ordered topics),
// whatever happens to other topics.
// A message with a DedupID (one stream message per id) or QoS 2 (a shared group's member must not get it
// twice when a batch is given back, shareack.go) is never batched; it waits for the wave on its way, then goes
// with the next one, each such message its own stream message.
type publisher struct {
	c        *Cluster
	mu       sync.Mutex
	subjects map[string]*subjectQueue // subjects with a publish on its way; its waiting messages
	pending  int                      // messages accepted and not settled yet
	idle     []chan struct{}          // closed when pending drops to 0
}

// Bounds of one batch: far below NATS's 1 MB maximum payload, small enough that a shared group's member gets a
// batch without waiting long for room in its window.
const (
	batchMaxMessages = 128
	batchMaxBytes    = 64 << 10
)

var errPublishStalled = errors.New("too many messages waiting for the stream")

type subjectQueue struct {
	batches []*outBatch // in order; the last one may still grow
	count   int         // messages in batches
}

// outBatch is the messages that go as one stream message, and the outcome they share.
type outBatch struct {
	msgs  []*nats.Msg
	bytes int
	alone bool
	r     *pubResult
}

// pubResult is the outcome of one stream message: its sequence or the error that ended it.
type pubResult struct {
	done chan struct{} // closed once seq or err is set
	seq  uint64
	err  error
}

func newPublisher(c *Cluster) *publisher {
	return &publisher{c: c, subjects: map[string]*subjectQueue{}}
}

// publish sends nm now if no publish of its subject is on its way, or queues it behind the one that is.
// alone: nm is never batched.
func (p *publisher) publish(nm *nats.Msg, alone bool) (*pubResult, error) {
	var deadline time.Time
	p.mu.Lock()
	for {
		q := p.subjects[nm.Subject]
		if q == nil {
			break
		}
		if q.count < p.c.opts.MaxPendingAcks {
			r := q.add(nm, alone)
			p.pending++
			p.mu.Unlock()
			return r, nil
		}
		if deadline.IsZero() {
			deadline = time.Now().Add(p.c.opts.OpTimeout)
		} else if time.Now().After(deadline) {
			p.mu.Unlock()
			return nil, errPublishStalled
		}
		p.mu.Unlock()
		time.Sleep(time.Millisecond)
		p.mu.Lock()
	}
	q := &subjectQueue{}
	p.subjects[nm.Subject] = q
	p.pending++
	p.mu.Unlock()
	b := &outBatch{msgs: []*nats.Msg{nm}, r: &pubResult{done: make(chan struct{})}}
	f, err := p.send(b)
	if err != nil {
		// Refused at once (stalled, not connected): the caller learns it from the error. Messages queued
		// meanwhile go on.
		p.settle(b, err)
		go p.run(nm.Subject, q, nil)
		return nil, err
	}
	go p.run(nm.Subject, q, []flight{{f, b}})
	return b.r, nil
}

// add queues nm in the last batch if it fits there, else in a new one. Under p.mu.
func (q *subjectQueue) add(nm *nats.Msg, alone bool) *pubResult {
	q.count++
	if n := len(q.batches); n > 0 {
		last := q.batches[n-1]
		if !alone && !last.alone && len(last.msgs) < batchMaxMessages && last.bytes+len(nm.Data) <= batchMaxBytes {
			last.msgs = append(last.msgs, nm)
			last.bytes += len(nm.Data)
			return last.r
		}
	}
	b := &outBatch{msgs: []*nats.Msg{nm}, bytes: len(nm.Data), alone: alone, r: &pubResult{done: make(chan struct{})}}
	q.batches = append(q.batches, b)
	return b.r
}

// flight is a stream message on its way.
type flight struct {
	f jetstream.PubAckFuture
	b *outBatch
}

// run waits for the acks of the subject's stream messages on their way (a wave), then sends everything that
// queued meanwhile as the next wave, until nothing waits. It is the only sender of its subject meanwhile, so
// the subject's stream messages are sent, and stored, in order.
func (p *publisher) run(subject string, q *subjectQueue, wave []flight) {
	for {
		for _, fl := range wave {
			select {
			case ack := <-fl.f.Ok():
				fl.b.r.seq = ack.Sequence
				p.settle(fl.b, nil)
			case err := <-fl.f.Err():
				p.settle(fl.b, err)
			}
		}
		p.mu.Lock()
		if len(q.batches) == 0 {
			delete(p.subjects, subject)
			p.mu.Unlock()
			return
		}
		// Several batches (full ones, or messages never batched) go back to back: one wave, one round trip.
		batches := q.batches
		q.batches, q.count = nil, 0
		p.mu.Unlock()
		wave = wave[:0]
		for _, b := range batches {
			f, err := p.send(b)
			if err != nil {
				p.settle(b, err)
				continue
			}
			wave = append(wave, flight{f, b})
		}
	}
}

// send hands b to JetStream as one stream message.
func (p *publisher) send(b *outBatch) (jetstream.PubAckFuture, error) {
	nm := b.msgs[0]
	if len(b.msgs) > 1 {
		parts := make([][]byte, len(b.msgs))
		for i, m := range b.msgs {
			parts[i] = m.Data
		}
		origin := p.c.cfg.Node
		data := encodeBatch(make([]byte, 0, b.bytes+3*len(parts)+len(origin)+8), origin, parts)
		nm = &nats.Msg{Subject: nm.Subject, Data: data}
	}
	// No automatic re-send on "no responders" (a stream leader being elected): a re-sent message would be stored
	// behind messages sent after it. It fails instead; the caller decides.
	return p.c.js.PublishMsgAsync(nm, jetstream.WithStallWait(p.c.opts.OpTimeout), jetstream.WithRetryAttempts(0))
}

// settle gives b's messages their outcome.
func (p *publisher) settle(b *outBatch, err error) {
	b.r.err = err
	close(b.r.done)
	p.mu.Lock()
	p.pending -= len(b.msgs)
	if p.pending == 0 {
		for _, ch := range p.idle {
			close(ch)
		}
		p.idle = nil
	}
	p.mu.Unlock()
}

// flushed returns a channel closed once every message accepted so far (and any accepted meanwhile) is settled:
// stored in the stream, or failed.
func (p *publisher) flushed() <-chan struct{} {
	ch := make(chan struct{})
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pending == 0 {
		close(ch)
		return ch
	}
	p.idle = append(p.idle, ch)
	return ch
}

// waiting is the number of messages accepted and not settled yet.
func (p *publisher) waiting() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pending
}

package cluster

import (
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// A stream message a shared group's consumer pulls may be a batch of several MQTT messages (publisher.go). It
// goes to the member it was pulled for (or other members here when that one has no room), message by message
// in order, each acknowledged by its member as a lone message would be; JetStream is told once every message of
// the batch is settled: Ack if all were delivered, Nak if any was given back. A Nak'd batch comes again whole,
// so its messages that were delivered come again too: a QoS 0 or 1 duplicate, never a loss. QoS 2 messages are
// never batched, so a QoS 2 delivery is still given back alone.

// shareMsg is what a shared delivery needs of its stream message: a jetstream.Msg, or one part of a batch.
type shareMsg interface {
	Ack() error
	Nak() error
	InProgress() error
}

// pulledBatch is a batch pulled for a shared group, until all of its messages are settled.
type pulledBatch struct {
	jm    jetstream.Msg
	left  atomic.Int32
	given atomic.Bool // some message was given back
}

// batchPart is one message of a pulledBatch.
type batchPart struct{ b *pulledBatch }

func (p batchPart) Ack() error        { return p.b.settle(false) }
func (p batchPart) Nak() error        { return p.b.settle(true) }
func (p batchPart) InProgress() error { return p.b.jm.InProgress() }

func (b *pulledBatch) settle(givenBack bool) error {
	if givenBack {
		b.given.Store(true)
	}
	if b.left.Add(-1) != 0 {
		return nil
	}
	if b.given.Load() {
		return b.jm.Nak()
	}
	return b.jm.Ack()
}

// batchRoomWait bounds how long a batch's next message waits for room in a member's window before it (and so
// the batch) is given back.
const batchRoomWait = shareFetchWait

// pickWaiting is pick for a batch's message: it waits, up to batchRoomWait, for room in the window of m or
// of another member of its group here, as long as the node runs. nil: none made room.
func (s *sharing) pickWaiting(m *shareMember) *shareMember {
	deadline := time.Now().Add(batchRoomWait)
	for {
		if to := s.pick(m); to != nil {
			return to
		}
		if time.Now().After(deadline) || !s.sleep(time.Millisecond, nil) {
			return nil
		}
	}
}

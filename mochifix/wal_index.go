package mochifix

// Part of the write-ahead log: wal_hook.go says which mochi defect it works around, what proves it and
// when it can go. This file: the index of pending publishes and which subscribers already hold them.

import (
	"bytes"
	"encoding/binary"
	"slices"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// walEntry is one publish not yet marked done, with what is known of its fan-out.
type walEntry struct {
	id     uint64
	msg    walMessage
	queue  map[string]uint16 // subscriber -> packet id announced before the store write
	queued map[string]bool   // subscriber -> its copy reached the store
	frames []byte            // this entry's records as written, copied into the log at compaction
	// publisher is the connection whose publish this is while it is in progress (nil once abandoned or
	// when loaded from disk): a client id can be taken over by a new connection.
	publisher *mqtt.Client
	abandoned bool
}

// heldBy reports whether subscriber cl already holds this message, given the in-flight messages mochi
// restored from the store. A queued record means the store had the copy before anything could be sent, so
// it is either still in flight (mochi resends it) or was acknowledged: either way no replay. A queue
// record without queued means the process died around the store write: the restored in-flight message
// under that packet id tells which side of the write it was. The packet id was free when chosen, so a
// matching message there is this copy.
func (e *walEntry) heldBy(cl *mqtt.Client) bool {
	if e.queued[cl.ID] {
		return true
	}
	id, ok := e.queue[cl.ID]
	if !ok {
		return false
	}
	pk, ok := cl.State.Inflight.Get(id)
	return ok && pk.FixedHeader.Type == packets.Publish && pk.TopicName == e.msg.Topic && bytes.Equal(pk.Payload, e.msg.Payload)
}

// appendPending records a publish before mochi acknowledges it and marks it as cl's publish in progress.
func (w *walLog) appendPending(cl *mqtt.Client, pk packets.Packet) (uint64, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if prev, ok := w.inProgress[cl.ID]; ok {
		w.abandonLocked(prev) // a publish of this id's previous connection never reached OnPublished
	}
	id := w.nextID
	w.nextID++
	m := walMessageOf(pk)
	frame, err := w.writeLocked(walPending, id, func(b []byte) []byte { return m.encode(b) })
	if err != nil {
		return 0, err
	}
	// The payload slice is mochi's and never modified after decoding, so it is kept without a copy.
	w.entries[id] = &walEntry{id: id, msg: m, queue: map[string]uint16{}, queued: map[string]bool{}, frames: slices.Clone(frame), publisher: cl}
	w.inProgress[cl.ID] = id
	return id, nil
}

// inProgressFor finds the publish in progress that pk, a subscriber's new in-flight copy, belongs to.
// The copy is matched on topic and payload too: a resent or retained copy with the same origin must not
// be taken for it (resends also carry DUP, which the caller excludes).
func (w *walLog) inProgressFor(pk packets.Packet) (uint64, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	id, ok := w.inProgress[pk.Origin]
	if !ok {
		return 0, false
	}
	e := w.entries[id]
	// With a topic alias mochi may blank the topic of the copy; the payload still has to match.
	if (pk.TopicName != e.msg.Topic && pk.TopicName != "") || !bytes.Equal(pk.Payload, e.msg.Payload) {
		return 0, false
	}
	return id, true
}

// appendMarker writes a queue or queued record for subscriber client and packet id pid.
func (w *walLog) appendMarker(kind walKind, id uint64, client string, pid uint16) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	frame, err := w.writeLocked(kind, id, func(b []byte) []byte {
		b = appendString(b, client)
		return binary.AppendUvarint(b, uint64(pid))
	})
	if err != nil {
		return err
	}
	if e, ok := w.entries[id]; ok {
		e.frames = append(e.frames, frame...)
		if kind == walQueue {
			e.queue[client] = pid
		} else {
			e.queued[client] = true
		}
	}
	return nil
}

// finish writes done for cl's publish in progress, once mochi has queued it for every subscriber.
func (w *walLog) finish(cl *mqtt.Client) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	id, ok := w.inProgress[cl.ID]
	if !ok || w.entries[id].publisher != cl {
		return nil
	}
	delete(w.inProgress, cl.ID)
	return w.doneLocked(id)
}

// markDone writes done for a record replayed at start.
func (w *walLog) markDone(id uint64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.doneLocked(id)
}

func (w *walLog) doneLocked(id uint64) error {
	if _, err := w.writeLocked(walDone, id, nil); err != nil {
		return err
	}
	delete(w.entries, id)
	if w.size > w.compactAt {
		return w.compactLocked()
	}
	return nil
}

// abandon is called when cl disconnects: a publish still in progress will never reach OnPublished (mochi
// returned because it could not write the ack). Its record stays pending and is replayed at the next start.
func (w *walLog) abandon(cl *mqtt.Client) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if id, ok := w.inProgress[cl.ID]; ok && w.entries[id].publisher == cl {
		w.abandonLocked(id)
	}
}

func (w *walLog) abandonLocked(id uint64) {
	e := w.entries[id]
	delete(w.inProgress, e.msg.Origin)
	e.publisher = nil
	e.abandoned = true
	// Without this record replay would take a QoS 2 publish completed on a later connection for one that
	// was never acknowledged (walReplay.skip). If it cannot be written, that is the only loss.
	if frame, err := w.writeLocked(walAbandoned, id, nil); err == nil {
		e.frames = append(e.frames, frame...)
	}
	w.abandoned = append(w.abandoned, id)
	for len(w.abandoned) > walMaxAbandoned {
		old := w.abandoned[0]
		w.abandoned = w.abandoned[1:]
		if e, ok := w.entries[old]; ok {
			w.log.Error("wal: too many abandoned publishes; forgetting the oldest, it will not be replayed",
				"topic", e.msg.Topic, "origin", e.msg.Origin, "limit", walMaxAbandoned)
			delete(w.entries, old)
		}
	}
}

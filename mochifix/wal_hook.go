package mochifix

// Defect: mochi v2.7.9's processPublish sends PUBACK/PUBREC to the publisher before publishToSubscribers
// queues the message into each subscriber's in-flight store, so a kill -9 in between loses a message the
// publisher was told is safe (for QoS 2 the publisher's PUBREC state is persisted too, so after a restart
// it even gets PUBCOMP for a message no subscriber will receive).
// Fix: a write-ahead log. Records, per publish with QoS > 0:
//   - pending {id, message}: in OnPublish, before mochi writes the ack;
//   - queue {id, subscriber, packet id}: just before the store persists a subscriber's copy;
//   - queued {id, subscriber, packet id}: just after the store did;
//   - done {id}: in OnPublished, once every subscriber's copy is queued;
//   - abandoned {id}: the publisher's connection ended before OnPublished.
//
// Fixes.Start replays every pending record (wal_replay.go) after mochi restored the store and before any
// listener accepts.
// Upstream: none filed.
// Proof: TestKill9LosesNoAcknowledgedMessage (e2e); TestAddLogsOnlyWhatTheHooksAccepted,
// TestStoreMarkersBracketTheStoreWrite and the tests in wal_file_test.go and wal_replay_test.go.
// Delete when: mochi queues a publish for its subscribers (or persists it) before acknowledging it.

import (
	"github.com/mochi-mqtt/server/v2/packets"

	mqtt "github.com/mochi-mqtt/server/v2"
)

// OnPublish runs before mochi writes PUBACK/PUBREC. A publish that cannot be logged is not acknowledged:
// v5 publishers get PUBACK 0x80, and 3.1.1 publishers none (mochi has no refusal code for them).
func (h *store) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if h.Hook.Provides(mqtt.OnPublish) {
		var err error
		if pk, err = h.Hook.OnPublish(cl, pk); err != nil {
			return pk, err
		}
	}
	if h.wal == nil || pk.FixedHeader.Qos == 0 || cl.Net.Inline {
		return pk, nil
	}
	if _, err := h.wal.appendPending(cl, pk); err != nil {
		h.wal.log.Error("publish refused: the write-ahead log cannot record it", "client", cl.ID, "topic", pk.TopicName, "error", err)
		if cl.Properties.ProtocolVersion == 5 {
			return pk, packets.ErrUnspecifiedError
		}
		return pk, packets.ErrRejectPacket
	}
	return pk, nil
}

func (h *store) OnPublished(cl *mqtt.Client, pk packets.Packet) {
	if h.Hook.Provides(mqtt.OnPublished) {
		h.Hook.OnPublished(cl, pk)
	}
	if h.wal == nil || pk.FixedHeader.Qos == 0 || cl.Net.Inline {
		return
	}
	if err := h.wal.finish(cl); err != nil {
		h.wal.log.Error("wal: cannot record a finished publish; it may be delivered again after a restart", "error", err)
	}
}

// persistMarked brackets the store write of a subscriber's copy of a publish in progress with the log's
// queue and queued records. Resends (DUP) and copies of other messages pass straight through.
func (h *store) persistMarked(cl *mqtt.Client, pk packets.Packet, sent int64, resends int) {
	if pk.FixedHeader.Type != packets.Publish || pk.FixedHeader.Dup {
		h.Hook.OnQosPublish(cl, pk, sent, resends)
		return
	}
	id, ok := h.wal.inProgressFor(pk)
	if !ok {
		h.Hook.OnQosPublish(cl, pk, sent, resends)
		return
	}
	// If a marker cannot be written the copy is still stored: replay then errs toward delivering again.
	_ = h.wal.appendMarker(walQueue, id, cl.ID, pk.PacketID)
	h.Hook.OnQosPublish(cl, pk, sent, resends)
	_ = h.wal.appendMarker(walQueued, id, cl.ID, pk.PacketID)
}

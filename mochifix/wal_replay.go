package mochifix

// Part of the write-ahead log: wal_hook.go says which mochi defect it works around, what proves it and
// when it can go. This file: replaying pending records into the sessions mochi restored, at Fixes.Start.
// Proof: TestWALReplay (wal_replay_test.go), TestKill9LosesNoAcknowledgedMessage (e2e).

import (
	"log/slog"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// walReplay delivers pending records to restored sessions, before any listener accepts a connection.
type walReplay struct {
	server *mqtt.Server
	// hooks are asked what mochi asks the server's hooks when it delivers (ACL, shared subscriber
	// selection, packet id exhaustion, OnQosPublish); the store is not among them.
	hooks hookSet
	// persist stores a subscriber's in-flight copy (the storage hook's OnQosPublish).
	persist func(cl *mqtt.Client, pk packets.Packet)
	now     func() time.Time
	log     *slog.Logger
}

// walReplayStats is what a replay did, for the log and tests.
type walReplayStats struct {
	Records   int // pending records found
	Delivered int // copies queued for subscribers that did not hold them
	Held      int // subscribers that already held their copy
	Skipped   int // records not replayed: expired, or a QoS 2 publish never acknowledged (see run)
}

// run replays every pending entry, marks it done and empties the log.
func (r *walReplay) run(w *walLog, pending []*walEntry) (walReplayStats, error) {
	st := walReplayStats{Records: len(pending)}
	for _, e := range pending {
		if r.skip(e) {
			st.Skipped++
		} else {
			d, held, err := r.deliver(w, e)
			st.Delivered += d
			st.Held += held
			if err != nil {
				return st, err
			}
		}
		if err := w.markDone(e.id); err != nil {
			return st, err
		}
	}
	return st, w.compact()
}

// skip reports records that must not be replayed. An expired message is dropped as mochi would. A QoS 2
// publish whose publisher session was restored without its PUBREC state was never acknowledged (mochi
// persists that state before writing PUBREC): the publisher still owns it and resends it with the same
// packet id, so replaying it too would deliver it twice. An abandoned publish is the exception: its PUBREC
// state was stored, and may be gone because the publisher completed the exchange on a later connection.
func (r *walReplay) skip(e *walEntry) bool {
	if e.msg.Expiry > 0 && e.msg.Expiry < r.now().Unix() {
		return true
	}
	if e.msg.QoS == 2 && !e.abandoned {
		if pub, ok := r.server.Clients.Get(e.msg.Origin); ok {
			ack, ok := pub.State.Inflight.Get(e.msg.PubPacketID)
			return !ok || ack.FixedHeader.Type != packets.Pubrec
		}
	}
	return false
}

// deliver queues e for every matching subscriber that does not hold it, as publishToSubscribers would.
func (r *walReplay) deliver(w *walLog, e *walEntry) (delivered, held int, err error) {
	pk := e.msg.packet()
	subs := r.server.Topics.Subscribers(pk.TopicName)
	holds := func(id string) bool {
		cl, ok := r.server.Clients.Get(id)
		return ok && e.heldBy(cl)
	}
	// A shared group delivered to one member before the crash is served.
	for group, members := range subs.Shared {
		for id := range members {
			if holds(id) {
				delete(subs.Shared, group)
				held++
				break
			}
		}
	}
	if len(subs.Shared) > 0 {
		subs = r.hooks.OnSelectSubscribers(subs, pk)
		if len(subs.SharedSelected) == 0 {
			subs.SelectShared()
		}
		subs.MergeSharedSelected()
	}
	// Inline subscriptions (Server.Subscribe) live in this process only: nothing to restore for them.
	for id, sub := range subs.Subscriptions {
		cl, ok := r.server.Clients.Get(id)
		if !ok {
			continue
		}
		if e.heldBy(cl) {
			held++
			continue
		}
		var logErr error
		persist := func(cl *mqtt.Client, out packets.Packet) {
			logErr = r.persistMarked(w, e.id, cl, out)
		}
		_, err := publishOffline(r.server, r.hooks, cl, sub, pk, persist, r.log)
		if logErr != nil {
			return delivered, held, logErr
		}
		if err == nil {
			delivered++
		}
	}
	return delivered, held, nil
}

// persistMarked stores a replayed copy between the same queue/queued records as at publish time, so a
// crash during replay does not deliver twice.
func (r *walReplay) persistMarked(w *walLog, id uint64, cl *mqtt.Client, out packets.Packet) error {
	if err := w.appendMarker(walQueue, id, cl.ID, out.PacketID); err != nil {
		return err
	}
	r.persist(cl, out)
	return w.appendMarker(walQueued, id, cl.ID, out.PacketID)
}

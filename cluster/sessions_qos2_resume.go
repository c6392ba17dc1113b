package cluster

import (
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// A resumed session's QoS 2 deliveries (see qos2Log). mochi sends the released ones' PUBRELs first (put in the
// window it takes over, qos2Pubrels). Then the replay (sessions_resume.go), for each message it meets:
//   - a released or completed entry's message is skipped: the client has it, maybe completed and forgotten;
//   - a sent entry's message goes with the recorded packet id and DUP set: a client that PUBREC'd it answers
//     PUBREC again without delivering it [MQTT-4.3.3-9]. Until then the id is held in the window (a
//     reservation) so that no other message takes it;
//   - every other message goes as a new one.
//
// A reservation the replay did not meet (the message expired, or was filtered out) ends with a PUBREL once the
// replay reached live delivery: a client that had the message completes it, another answers 0x92.

// reservedOrigin marks a reservation in mochi's window: never written to the client.
const reservedOrigin = "\x00idmq-qos2-reserved"

type qos2Action int

const (
	qos2New qos2Action = iota
	qos2Skip
	qos2Again
)

// adopt installs a resumed session's record, stored already. Its entries without a known sequence are held
// (not dropped by covered) until the replay meets them or ends.
func (q *qos2Log) adopt(entries []*qos2Entry) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.entries = entries
	for _, e := range entries {
		e.hold = true
		if e.state != qos2Done {
			q.live[e.id] = e
		}
	}
}

// prepare readies the log for a replay into cl: sent entries mochi did not send again get a reservation.
// It returns the released entries missing from the window, whose PUBREL the caller sends.
func (q *qos2Log) prepare(cl *mqtt.Client, srv *mqtt.Server) []uint16 {
	q.mu.Lock()
	defer q.mu.Unlock()
	var pubrels []uint16
	q.unmatched.Store(int32(len(q.entries)))
	for _, e := range q.entries {
		e.matched, e.reserved = false, false
		out, inWindow := cl.State.Inflight.Get(e.id)
		switch {
		case e.state == qos2Sent && inWindow && out.Origin != reservedOrigin:
			// mochi sent it again itself (a session taken over on this node): skipped when met
		case e.state == qos2Sent:
			if !inWindow {
				cl.State.Inflight.Set(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2},
					PacketID: e.id, Origin: reservedOrigin})
				atomic.AddInt64(&srv.Info.Inflight, 1)
			}
			e.reserved = true
			q.reserved.Add(1)
		case e.state == qos2Released && !inWindow:
			pubrels = append(pubrels, e.id)
		}
	}
	return pubrels
}

// match tells the replay what to do with the message of stream sequence seq and fingerprint fp, delivered
// at qos.
func (q *qos2Log) match(seq uint64, fp [16]byte, qos byte) (qos2Action, uint16) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, e := range q.entries {
		if e.matched || e.fp != fp || e.seq != 0 && e.seq != seq {
			continue
		}
		e.matched, e.hold, e.seq = true, false, seq // its sequence is known now: covered drops it exactly
		q.unmatched.Add(-1)
		if e.state != qos2Sent || !e.reserved {
			return qos2Skip, 0
		}
		e.reserved = false
		q.reserved.Add(-1)
		if qos != 2 {
			return qos2New, 0 // the subscription's QoS went down meanwhile; the reservation ends with a PUBREL
		}
		return qos2Again, e.id
	}
	return qos2New, 0
}

// settle ends a replay that reached live delivery: reservations it did not use are released (PUBREL once
// stored), completed entries it did not meet are dropped (no replay meets them any more).
func (q *qos2Log) settle(release func(id uint16)) {
	q.mu.Lock()
	var ids []uint16
	kept := q.entries[:0]
	for _, e := range q.entries {
		if e.reserved {
			e.reserved = false
			q.reserved.Add(-1)
			ids = append(ids, e.id)
		}
		e.hold = false
		if !e.matched && e.state == qos2Done {
			continue
		}
		kept = append(kept, e)
	}
	if len(kept) != len(q.entries) {
		clear(q.entries[len(kept):])
		q.entries = kept
		q.version++
		q.kick()
	}
	q.unmatched.Store(0)
	q.mu.Unlock()
	for _, id := range ids {
		release(id)
	}
}

// unreserve takes the reservations out of cl's window (a replay that ended early, a takeover here): mochi
// would send them again as they are.
func (q *qos2Log) unreserve(cl *mqtt.Client, srv *mqtt.Server) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, e := range q.entries {
		if !e.reserved {
			continue
		}
		e.reserved = false
		q.reserved.Add(-1)
		if out, ok := cl.State.Inflight.Get(e.id); ok && out.Origin == reservedOrigin && cl.State.Inflight.Delete(e.id) {
			atomic.AddInt64(&srv.Info.Inflight, -1)
		}
	}
}

// qos2Start readies a replay's QoS 2 state: reservations, and the PUBRELs mochi did not send.
func (r *replay) qos2Start() {
	q := r.s.q2.Load()
	if q == nil {
		return
	}
	for _, id := range q.prepare(r.cl, r.m.h.server) {
		rel := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: id}
		if r.cl.State.Inflight.Set(rel) {
			atomic.AddInt64(&r.m.h.server.Info.Inflight, 1)
		}
		_ = r.cl.WritePacket(rel)
	}
}

// qos2Lookup: whether the replay skips d, or sends it again with a recorded packet id (again != 0); fp is d's
// fingerprint when the caller records it (a new QoS 2 delivery).
func (r *replay) qos2Lookup(d *Delivery, qos byte) (skip bool, again uint16, fp [16]byte) {
	q := r.s.q2.Load()
	pending := q != nil && q.unmatched.Load() > 0
	if !pending && qos != 2 {
		return false, 0, fp
	}
	fp = fingerprint(d.ClientID, d.Topic, d.Created.Unix(), d.Payload)
	if !pending {
		return false, 0, fp
	}
	act, id := q.match(d.Seq, fp, qos)
	switch act {
	case qos2Skip:
		r.q2skip++
	case qos2Again:
		r.q2again++
	}
	return act == qos2Skip, id, fp
}

// qos2Record records a new QoS 2 delivery of the replay, stored before it is written (qos2Encode).
func (r *replay) qos2Record(pk *packets.Packet, seq uint64, fp [16]byte) {
	if pk.FixedHeader.Qos == 2 {
		r.m.qos2Of(r.s, true).sent(pk.PacketID, seq, fp)
	}
}

// qos2Reserved is how many places of the window reservations hold: the replay's window leaves them out.
func (r *replay) qos2Reserved() int {
	if q := r.s.q2.Load(); q != nil {
		return int(q.reserved.Load())
	}
	return 0
}

// qos2End ends the replay's QoS 2 part: settled when live delivery took over, reservations taken back otherwise.
func (r *replay) qos2End(live bool) {
	q := r.s.q2.Load()
	if q == nil {
		return
	}
	if !live {
		q.unreserve(r.cl, r.m.h.server)
		return
	}
	cl, m := r.cl, r.m
	q.settle(func(id uint16) {
		q.release(id, func() { m.sendPubrel(cl, id) })
	})
}

// replayWriteBatch is the most deliveries the replay holds for their QoS 2 entries to be stored in one write.
const replayWriteBatch = 64

// write sends a replayed packet, or holds it while QoS 2 entries of it or of packets before it wait to be
// stored: one write then covers the batch instead of one round trip per message (the replay writes from
// its own goroutine; the hand-over holds routing meanwhile).
func (r *replay) write(pk packets.Packet) error {
	q := r.s.q2.Load()
	if len(r.held) == 0 && (q == nil || pk.FixedHeader.Qos != 2 || q.stored()) {
		return r.cl.WritePacket(pk)
	}
	r.held = append(r.held, pk)
	if len(r.held) >= replayWriteBatch {
		return r.flushHeld()
	}
	return nil
}

// flushHeld waits until the held packets' entries are stored, then writes them in order.
func (r *replay) flushHeld() error {
	if len(r.held) == 0 {
		return nil
	}
	held := r.held
	r.held = nil
	if q := r.s.q2.Load(); q != nil {
		if err := q.awaitAll(); err != nil {
			r.m.log.Warn("cluster: ending a connection whose QoS 2 state cannot be stored", "client", r.cl.ID, "err", err)
			r.cl.Stop(err)
			return errClientGone
		}
	}
	for _, pk := range held {
		if err := r.cl.WritePacket(pk); err != nil {
			return errClientGone
		}
	}
	return nil
}

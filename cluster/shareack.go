package cluster

import (
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// The acknowledgement side of shared subscriptions: a delivery in flight to a member (a shareRecord) is
// acknowledged to JetStream when the member acknowledges it, and given back when the member cannot.

// disconnected ends all of cl's memberships and takes its unacknowledged deliveries back: out of its session
// (so a resumed session does not receive them too) and back to JetStream, for another member. A QoS 2
// delivery the client already received (PUBREC; the PUBREL is in flight) counts as delivered.
func (s *sharing) disconnected(cl *mqtt.Client) {
	s.mu.Lock()
	sc := s.clients[cl]
	if sc == nil {
		s.mu.Unlock()
		return
	}
	delete(s.clients, cl)
	for _, m := range sc.members {
		s.removeMember(m)
	}
	var ack, nak []shareMsg
	for id, r := range sc.records {
		if cl.IsTakenOver() {
			s.handed[cl.ID] = append(s.handed[cl.ID], r) // mochi moves its in-flight window to the new connection
			continue
		}
		s.settleRecord(r)
		if pk, ok := cl.State.Inflight.Get(id); ok && pk.FixedHeader.Type == packets.Pubrel {
			ack = append(ack, r.msg)
			continue
		}
		if cl.State.Inflight.Delete(id) {
			atomic.AddInt64(&s.server.Info.Inflight, -1)
		}
		nak = append(nak, r.msg)
	}
	s.mu.Unlock()
	for _, m := range ack {
		_ = m.Ack()
	}
	for _, m := range nak {
		_ = m.Nak()
	}
}

// completed: cl acknowledged packet id (PUBACK for QoS 1, PUBCOMP for QoS 2).
func (s *sharing) completed(cl *mqtt.Client, id uint16) {
	if r := s.take(cl, id); r != nil {
		_ = r.msg.Ack()
	}
}

// dropped: mochi gave up on packet id (expired in flight, or the client refused it with PUBREC >= 0x80);
// another member may take it. A session taken over without Clean Start loses its window this way too,
// after mochi copied it to the new connection, which gets the deliveries again: they wait for it (adopt).
func (s *sharing) dropped(cl *mqtt.Client, id uint16) {
	if cl.IsTakenOver() {
		s.handOver(cl, id)
		return
	}
	if r := s.take(cl, id); r != nil {
		_ = r.msg.Nak()
	}
}

// handOver keeps cl's delivery id for the connection that took cl's session over.
func (s *sharing) handOver(cl *mqtt.Client, id uint16) {
	if s.records.Load() == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sc := s.clients[cl]
	if sc == nil || sc.records[id] == nil {
		return
	}
	s.handed[cl.ID] = append(s.handed[cl.ID], sc.records[id])
	delete(sc.records, id)
	s.dropClientIfIdle(cl, sc)
}

// adopt gives cl the deliveries of the session it took over that mochi resends to it; the others go back to
// JetStream for another member. Called once cl's session is established.
func (s *sharing) adopt(cl *mqtt.Client) {
	s.mu.Lock()
	rs := s.handed[cl.ID]
	delete(s.handed, cl.ID)
	var nak []shareMsg
	for _, r := range rs {
		if pk, ok := cl.State.Inflight.Get(r.id); ok && !cl.Closed() && (pk.FixedHeader.Type == packets.Publish || pk.FixedHeader.Type == packets.Pubrel) {
			s.clientOf(cl).records[r.id] = r
			continue
		}
		s.settleRecord(r)
		nak = append(nak, r.msg)
	}
	s.mu.Unlock()
	for _, m := range nak {
		_ = m.Nak()
	}
}

func (s *sharing) take(cl *mqtt.Client, id uint16) *shareRecord {
	if s.records.Load() == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sc := s.clients[cl]
	if sc == nil {
		return nil
	}
	r := sc.records[id]
	if r == nil {
		return nil
	}
	delete(sc.records, id)
	s.settleRecord(r)
	s.dropClientIfIdle(cl, sc)
	return r
}

// settleRecord releases the room r held in its member's window. Under mu.
func (s *sharing) settleRecord(r *shareRecord) {
	s.records.Add(-1)
	s.release(r.m)
}

// release gives back one reserved place in m's window. Under mu.
func (s *sharing) release(m *shareMember) {
	m.outstanding--
	m.signal()
}

// keepAlive tells JetStream, every third of the ack wait, that deliveries still in flight to connected
// members are being worked on, so they are redelivered after the ack wait only when their node is gone.
func (s *sharing) keepAlive() {
	defer s.wg.Done()
	every := s.ackWait / 3
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case now := <-t.C:
			var busy []shareMsg
			s.mu.Lock()
			for _, sc := range s.clients {
				for _, r := range sc.records {
					if now.Sub(r.since) >= every {
						r.since = now
						busy = append(busy, r.msg)
					}
				}
			}
			s.mu.Unlock()
			for _, m := range busy {
				_ = m.InProgress()
			}
		}
	}
}

// signal wakes m's lanes that wait for room.
func (m *shareMember) signal() {
	for _, w := range m.wake {
		select {
		case w <- struct{}{}:
		default:
		}
	}
}

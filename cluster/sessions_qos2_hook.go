package cluster

import (
	"bytes"
	"context"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// How a persistent session's QoS 2 deliveries reach its qos2Log (sessions_qos2.go): mochi's events, the
// client's PUBREC, the routing consumer's message in progress.

// routedMark names the routed QoS 2 message being handed to mochi (Hook.deliver), so that OnQosPublish can
// record its stream sequence and created second: mochi stamps an injected message with its own time.
type routedMark struct {
	seq           uint64
	created       int64 // the stream copy's created second, which the fingerprint names
	origin, topic string
	payload       []byte
}

func (k *routedMark) is(pk *packets.Packet) bool {
	return k.origin == pk.Origin && k.topic == pk.TopicName && bytes.Equal(k.payload, pk.Payload)
}

// qos2Of returns s's log, creating it when create is set.
func (m *sessions) qos2Of(s *session, create bool) *qos2Log {
	if q := s.q2.Load(); q != nil || !create {
		return q
	}
	q := m.newQoS2(s.cl)
	if !s.q2.CompareAndSwap(nil, q) {
		return s.q2.Load()
	}
	return q
}

func (m *sessions) newQoS2(cl *mqtt.Client) *qos2Log {
	key, kv := ClientKey(cl.ID), m.c.b.qos2
	q := newQoS2Log(func(ctx context.Context, data []byte) error {
		_, err := kv.Put(ctx, key, data)
		return err
	}, m.c.opts.OpTimeout)
	id := cl.ID
	q.setOwner(func() bool { return m.holds(id) })
	return q
}

// holds: this node holds client id, with whichever connection (a takeover here keeps the record).
func (m *sessions) holds(id string) bool {
	o := m.h.owners
	o.mu.Lock()
	defer o.mu.Unlock()
	_, ok := o.mine[id]
	return ok
}

// qos2Session is cl's persistent session when pk is a QoS 2 delivery to it, nil otherwise.
func (m *sessions) qos2Session(cl *mqtt.Client, pk *packets.Packet) *session {
	if pk.FixedHeader.Type != packets.Publish || pk.FixedHeader.Qos != 2 || cl.Net.Inline {
		return nil
	}
	return m.of(cl)
}

// qos2Queued records a QoS 2 delivery mochi put in a persistent session's window (OnQosPublish); it is stored
// before the PUBLISH is written (qos2Encode).
func (m *sessions) qos2Queued(cl *mqtt.Client, pk *packets.Packet) {
	s := m.qos2Session(cl, pk)
	if s == nil {
		return
	}
	seq, created := uint64(0), pk.Created
	if k := m.routing.Load(); k != nil && k.is(pk) {
		seq, created = k.seq, k.created
	}
	m.qos2Of(s, true).sent(pk.PacketID, seq, fingerprint(pk.Origin, pk.TopicName, created, pk.Payload))
}

// qos2Encode holds a QoS 2 PUBLISH to a persistent session until its entry is stored (OnPacketEncode, in the
// client's write loop: only this client waits). A state that cannot be stored ends the connection, the
// PUBLISH unsent: the client resumes, and nothing was delivered that the cluster does not know of.
func (m *sessions) qos2Encode(cl *mqtt.Client, pk *packets.Packet) {
	s := m.qos2Session(cl, pk)
	if s == nil {
		return
	}
	q := s.q2.Load()
	if q == nil {
		return
	}
	if !q.tracks(pk.PacketID) { // not seen by OnQosPublish (a resend before the session was tracked here)
		q.sent(pk.PacketID, 0, fingerprint(pk.Origin, pk.TopicName, pk.Created, pk.Payload))
	}
	if err := q.await(pk.PacketID); err != nil {
		m.log.Warn("cluster: ending a connection whose QoS 2 state cannot be stored", "client", cl.ID, "err", err)
		cl.Stop(err)
	}
}

// qos2Pubrec stores a tracked delivery as released before mochi answers the client's PUBREC with PUBREL
// [MQTT-4.3.3-4]. So that the client's read loop does not wait one round trip per message, the PUBREC is
// taken from mochi (returned as a PUBACK for packet id 0, which mochi ignores: no delivery has id 0) and the
// PUBREL is sent as mochi would once stored. ok false: mochi handles pk itself.
func (m *sessions) qos2Pubrec(cl *mqtt.Client, pk packets.Packet) (packets.Packet, bool) {
	s := m.of(cl)
	if s == nil {
		return pk, false
	}
	q := s.q2.Load()
	if q == nil {
		return pk, false
	}
	if pk.ReasonCode >= packets.ErrUnspecifiedError.Code {
		q.completed(pk.PacketID) // the client refused it: its flow ends here [MQTT-4.3.3-4]
		return pk, false
	}
	if out, ok := cl.State.Inflight.Get(pk.PacketID); !ok || out.FixedHeader.Type != packets.Publish {
		return pk, false
	}
	id := pk.PacketID
	if !q.release(id, func() { m.sendPubrel(cl, id) }) {
		return pk, false
	}
	return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}}, true
}

// sendPubrel does what mochi's PUBREC processing does: the PUBREL replaces the PUBLISH in the window and is
// sent [MQTT-4.3.3-5]; nothing if the delivery is no longer a PUBLISH in flight (the connection ended).
func (m *sessions) sendPubrel(cl *mqtt.Client, id uint16) {
	if cl.Closed() {
		return
	}
	if out, ok := cl.State.Inflight.Get(id); !ok || out.FixedHeader.Type != packets.Publish {
		return
	}
	now := time.Now().Unix()
	rel := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: id, Created: now,
		Expiry: now + m.h.server.Options.Capabilities.MaximumMessageExpiryInterval}
	cl.State.Inflight.DecreaseReceiveQuota()
	cl.State.Inflight.Set(rel)
	_ = cl.WritePacket(rel)
}

// qos2Completed: the client's PUBCOMP (or one mochi takes as such) ended a flow.
func (m *sessions) qos2Completed(cl *mqtt.Client, pk packets.Packet) {
	if pk.FixedHeader.Type != packets.Pubcomp {
		return
	}
	if s := m.of(cl); s != nil {
		if q := s.q2.Load(); q != nil {
			q.completed(pk.PacketID)
		}
	}
}

// qos2Covered: a cursor taken at at was stored; completed entries it covers go.
func (m *sessions) qos2Covered(s *session, cursor uint64, at time.Time) {
	if q := s.q2.Load(); q != nil && !at.IsZero() {
		q.covered(cursor, at)
	}
}

// qos2Ended deletes the record of a session that ended (clean start, expiry); the session's own log, if any,
// stops first.
func (m *sessions) qos2Ended(ctx context.Context, s *session, id string) {
	if s != nil {
		if q := s.q2.Load(); q != nil {
			q.close()
		}
	}
	if err := m.c.b.qos2.Delete(ctx, ClientKey(id)); err != nil {
		m.log.Warn("cluster: deleting an ended session's QoS 2 state", "client", id, "err", err)
	}
}

// qos2Pubrels puts the PUBRELs of a resumed session's released deliveries into the window of the offline
// client mochi takes over, so mochi sends them again first [MQTT-4.4.0-1].
func (m *sessions) qos2Pubrels(ph *mqtt.Client, entries []*qos2Entry) {
	now := time.Now().Unix()
	for _, e := range entries {
		if e.state != qos2Released {
			continue
		}
		rel := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: e.id, Created: now,
			Expiry: now + m.h.server.Options.Capabilities.MaximumMessageExpiryInterval}
		if ph.State.Inflight.Set(rel) {
			atomic.AddInt64(&m.h.server.Info.Inflight, 1)
		}
	}
}

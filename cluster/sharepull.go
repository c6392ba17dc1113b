package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/nats-io/nats.go/jetstream"
)

// consumer returns g's JetStream consumer, creating it (or binding the one another node created: same name,
// same configuration) when this node has none yet.
func (s *sharing) consumer(ctx context.Context, g *shareGroup) (jetstream.Consumer, error) {
	g.consMu.Lock()
	defer g.consMu.Unlock()
	if g.cons != nil {
		return g.cons, nil
	}
	cons, err := s.c.b.stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:     g.name,
		Description: "idmq: shared subscription $share/" + g.key.group + "/" + g.key.filter,
		// A group's members receive what is published after the group came to be, like a new subscription.
		DeliverPolicy:     jetstream.DeliverNewPolicy,
		AckPolicy:         jetstream.AckExplicitPolicy,
		AckWait:           s.ackWait,
		MaxDeliver:        -1,
		FilterSubjects:    FilterSubjects(g.key.filter),
		MaxAckPending:     shareMaxAckPend,
		MaxWaiting:        shareMaxWaiting,
		InactiveThreshold: shareInactive,
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: consumer of $share/%s/%s: %w", g.key.group, g.key.filter, err)
	}
	g.cons = cons
	return cons, nil
}

// forget drops a consumer that failed, so that the next pull binds (or recreates) it.
func (g *shareGroup) forget(cons jetstream.Consumer) {
	g.consMu.Lock()
	if g.cons == cons {
		g.cons = nil
	}
	g.consMu.Unlock()
}

// pull keeps one of m's pull requests (lane) open, for up to half the room m has, until m leaves or the node
// stops. A request outlives m's leaving by up to shareFetchWait; what it still brings goes to another local
// member or back to JetStream.
func (s *sharing) pull(m *shareMember, lane int) {
	defer s.wg.Done()
	defer s.pullerDone(m.g)
	var backoff time.Duration
	for {
		if backoff > 0 && !s.sleep(backoff, nil) {
			return
		}
		s.mu.Lock()
		left, n := m.left, 0
		if !left && !m.cl.Closed() { // a closed member leaves when mochi reports the disconnect
			n = min(shareWindow-m.outstanding-m.requested, shareWindow/shareLanes)
			m.requested += max(n, 0)
		}
		s.mu.Unlock()
		if left || s.ctx.Err() != nil {
			return
		}
		if n <= 0 {
			if !s.sleep(shareFetchWait, m.wake[lane]) { // until an acknowledgement makes room, or m leaves
				return
			}
			continue
		}
		err := s.fetch(m, n)
		s.mu.Lock()
		m.requested -= n
		s.mu.Unlock()
		if err == nil {
			backoff = 0
			continue
		}
		backoff = min(max(2*backoff, 250*time.Millisecond), 5*time.Second)
		if s.ctx.Err() == nil {
			s.log.Debug("cluster: shared subscription pull", "group", m.g.key.group, "filter", m.g.key.filter, "err", err)
		}
	}
}

// sleep waits for d or wake; false if the node stops meanwhile.
func (s *sharing) sleep(d time.Duration, wake <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-wake:
	case <-t.C:
	case <-s.ctx.Done():
		return false
	}
	return true
}

// fetch runs one pull request for up to n messages and hands each over as it arrives.
func (s *sharing) fetch(m *shareMember, n int) error {
	ctx, cancel := context.WithTimeout(s.ctx, s.c.opts.OpTimeout)
	cons, err := s.consumer(ctx, m.g)
	cancel()
	if err != nil {
		return err
	}
	ctx, cancel = context.WithTimeout(s.ctx, shareFetchWait)
	defer cancel()
	batch, err := cons.Fetch(n, jetstream.FetchContext(ctx))
	if err != nil {
		m.g.forget(cons)
		return err
	}
	for jm := range batch.Messages() {
		s.deliver(m, jm)
	}
	err = batch.Error()
	if err == nil || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return nil
	}
	m.g.forget(cons) // deleted (inactive), or lost with its leader: bind it again
	return err
}

// deliver hands one stream message of m's group, a message or a batch of them (sharebatch.go), to m, or to
// another local member with room if m has none (it left, or closed), or back to JetStream.
func (s *sharing) deliver(m *shareMember, jm jetstream.Msg) {
	var msgs []Message
	err := decodeMessages(jm.Data(), func(msg Message, _ bool) { msgs = append(msgs, msg) })
	if err != nil {
		s.log.Warn("cluster: skipping unreadable stream message", "consumer", m.g.name, "err", err)
		_ = jm.Term()
		return
	}
	if len(msgs) == 1 {
		s.deliverOne(m, jm, &msgs[0], false)
		return
	}
	b := &pulledBatch{jm: jm}
	b.left.Store(int32(len(msgs)))
	for i := range msgs {
		s.deliverOne(m, batchPart{b}, &msgs[i], true)
	}
}

// deliverOne hands msg to m or another member here; inBatch: wait for room rather than give it back at once.
func (s *sharing) deliverOne(m *shareMember, jm shareMsg, msg *Message, inBatch bool) {
	pk, ok := packetOf(msg, s.c.opts.Now())
	if !ok {
		_ = jm.Ack() // expired on its way [MQTT-3.3.2-5]
		return
	}
	// FilterSubjects selects a superset; mochi's exact MQTT match decides ('$' topics, long topics).
	if _, match := s.server.Topics.Subscribers(msg.Topic).Shared[m.g.guard]; !match {
		_ = jm.Ack()
		return
	}
	to := s.pick(m)
	if to == nil && inBatch {
		to = s.pickWaiting(m)
	}
	if to == nil {
		_ = jm.Nak()
		return
	}
	if s.readAllowed != nil && !s.readAllowed(to.cl, msg.Topic, false) {
		s.mu.Lock()
		s.release(to)
		s.mu.Unlock()
		_ = jm.Ack() // the ACL changed since the member subscribed: dropped, as mochi drops it on one node
		return
	}
	pk.FixedHeader.Retain = false // shared subscriptions get no retained messages from the stream
	d := &delivery{m: to, msg: jm}
	s.injectMu.Lock()
	d.origin = s.nextOrigin()
	s.injector.ID = d.origin
	s.current.Store(d)
	err := s.server.InjectPacket(s.injector, pk)
	s.current.Store(nil)
	s.injectMu.Unlock()
	s.settle(d, err)
}

// pick reserves a place in the window of m, or of another member of its group on this node.
func (s *sharing) pick(m *shareMember) *shareMember {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hasRoom(m) {
		m.outstanding++
		return m
	}
	for _, x := range m.g.members {
		if s.hasRoom(x) {
			x.outstanding++
			return x
		}
	}
	return nil
}

// hasRoom: x is a member still, connected, and below both its window and mochi's in-flight limit. Under mu.
func (s *sharing) hasRoom(x *shareMember) bool {
	return !x.left && x.outstanding < shareWindow && !x.cl.Closed() &&
		x.cl.State.Inflight.Len() < int(s.server.Options.Capabilities.MaximumInflight)
}

// settle decides, once mochi handed d over, what JetStream is told: nothing yet for a copy in flight (its
// record waits for the member's acknowledgement), Ack for a QoS 0 copy handed over, Nak for a copy that did
// not reach the member, so that another member gets it. A QoS 1/2 copy mochi did not put in the member's
// in-flight window did not reach it: mochi refuses it without a word when the window filled after pick (its
// other subscriptions' deliveries), and the ACL refusal it shares that silence with was ruled out before.
func (s *sharing) settle(d *delivery, err error) {
	var ack bool
	s.mu.Lock()
	switch {
	case d.rec != nil && !d.dropped:
		s.mu.Unlock()
		return // the record holds the reservation now
	case d.rec != nil: // recorded, then mochi rolled it back
		if sc := s.clients[d.m.cl]; sc != nil && sc.records[d.rec.id] == d.rec {
			delete(sc.records, d.rec.id)
			s.settleRecord(d.rec)
		}
	case d.orphan:
		if d.m.cl.State.Inflight.Delete(d.orphanID) {
			atomic.AddInt64(&s.server.Info.Inflight, -1)
		}
		s.release(d.m)
	default:
		ack = d.selected && !d.dropped && err == nil && d.qos == 0
		s.release(d.m)
	}
	s.mu.Unlock()
	if ack {
		_ = d.msg.Ack()
	} else {
		_ = d.msg.Nak()
	}
}

// selectSubscribers: a shared delivery goes to its one member and nobody else; any other publish goes to no
// shared subscriber here (its group's consumer delivers it). A publish no node routed (mochi's own $SYS
// updates have no origin) keeps mochi's local choice.
func (s *sharing) selectSubscribers(subs *mqtt.Subscribers, pk packets.Packet) *mqtt.Subscribers {
	if strings.HasPrefix(pk.Origin, shareOriginPrefix) {
		if d := s.current.Load(); d != nil && d.origin == pk.Origin {
			return s.selectMember(subs, d, pk)
		}
	}
	if pk.Origin == "" {
		return subs
	}
	subs.Shared, subs.SharedSelected = nil, nil
	return subs
}

func (s *sharing) selectMember(subs *mqtt.Subscribers, d *delivery, pk packets.Packet) *mqtt.Subscribers {
	out := &mqtt.Subscribers{
		SharedSelected:      map[string]packets.Subscription{},
		Subscriptions:       map[string]packets.Subscription{},
		InlineSubscriptions: map[int]mqtt.InlineSubscription{},
	}
	id := d.m.cl.ID
	sub, ok := subs.Shared[d.m.filter][id]
	// mochi delivers by client id: the id must still name this connection (not one that took it over).
	if cl, held := s.server.Clients.Get(id); ok && held && cl == d.m.cl {
		out.SharedSelected[id] = sub
		d.selected = true
		d.qos = min(pk.FixedHeader.Qos, sub.Qos, s.server.Options.Capabilities.MaximumQos) // as mochi downgrades it
	}
	return out
}

// queued: mochi put a shared delivery in its member's in-flight window (QoS 1/2). The record waits for the
// member's acknowledgement; a member that closed meanwhile gets nothing (settle takes it back).
func (s *sharing) queued(cl *mqtt.Client, pk packets.Packet, resends int) {
	if resends > 0 || !strings.HasPrefix(pk.Origin, shareOriginPrefix) {
		return
	}
	d := s.current.Load()
	if d == nil || d.origin != pk.Origin || cl != d.m.cl {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if cl.Closed() {
		d.orphan, d.orphanID = true, pk.PacketID
		return
	}
	rec := &shareRecord{msg: d.msg, m: d.m, id: pk.PacketID, since: time.Now()}
	s.clientOf(cl).records[pk.PacketID] = rec
	s.records.Add(1)
	d.rec = rec
}

// notQueued: mochi dropped a shared delivery (the member's outbound queue was full).
func (s *sharing) notQueued(cl *mqtt.Client, pk packets.Packet) {
	if !strings.HasPrefix(pk.Origin, shareOriginPrefix) {
		return
	}
	if d := s.current.Load(); d != nil && d.origin == pk.Origin && cl == d.m.cl {
		d.dropped = true
	}
}

package cluster

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idmq/idmq/mochifix"
)

// A resumed session first gets its queue from the stream, then live delivery, with no gap and no duplicate at
// the boundary, in stream order:
//
//  1. Catch-up: a short-lived consumer (ephemeral, unacknowledged, filtered to the session's subscriptions)
//     reads from cursor+1; each message is delivered to this client alone, with mochi's per-subscriber rules
//     (No Local, the ACL's read check, retain as published, subscription identifiers, QoS downgrade, message
//     expiry). The client's window is respected: at most replayWindow messages in flight, the next one waits
//     for an acknowledgement. Another node's message is delivered only once the routing consumer passed it, so
//     the replay never gets ahead of what live delivery would bring again.
//  2. Hand-over, when little is left: local publishes are held (localGate) and routing pauses (routeMu);
//     this node's own messages already sent are awaited; the rest of the queue up to the stream's end is
//     delivered (another node's message only up to the routing consumer's position, the rest comes live);
//     then the subscriptions go into mochi's topic tree and everything resumes. Held for a few round trips.
//
// Shared subscriptions are restored but not replayed: their messages went to other members of the group.

// replayBatch is the most messages read from the stream at once; handOverRest the remainder left for the
// hand-over, which holds this node's routing while it runs.
const (
	replayBatch  = 256
	handOverRest = 64
)

var (
	errClientGone    = errors.New("cluster: the client left during the replay")
	errReplayStalled = errors.New("cluster: the client did not acknowledge its queue during the hand-over")
	errReplayGap     = errors.New("cluster: the replay's consumer sent messages that never arrived")
)

type replay struct {
	m         *sessions
	s         *session
	cl        *mqtt.Client
	node      string
	idx       *mqtt.TopicsIndex // the session's subscriptions, as mochi would match them
	subjs     []string          // FilterSubjects of the replayed subscriptions
	cons      jetstream.Consumer
	next      uint64           // first stream sequence not read yet
	delivered uint64           // the consumer's sequence of the last message read (sessions_stream.go)
	left      uint64           // messages for the consumer after the last one read
	buf       []Delivery       // read, not handled yet
	limit     int              // window during the catch-up
	reopen    bool             // the consumer must be created again from next
	held      []packets.Packet // delivered, written once their QoS 2 entries are stored (replay.write)

	from    uint64 // the cursor it started from
	sent    int    // messages delivered
	q2again int    // QoS 2 messages sent again with their recorded packet id
	q2skip  int    // messages skipped: the client had them (QoS 2 released or completed)
	started time.Time
}

// resume runs a resumed session's replay and hand-over; a failed one ends the connection, so the client
// resumes again from its cursor.
func (m *sessions) resume(s *session) {
	defer close(s.replayed)
	r := m.newReplay(s)
	s.mu.Lock()
	s.replay = r
	s.mu.Unlock()
	r.qos2Start()
	err := r.run() // on success the hand-over ended replaying; otherwise the connection is ending
	r.qos2End(err == nil)
	s.mu.Lock()
	s.replay = nil
	s.mu.Unlock()
	r.closeConsumer()
	if err != nil && !errors.Is(err, errClientGone) {
		m.log.Warn("cluster: resuming a session failed; the client is disconnected to resume again", "client", s.cl.ID, "err", err)
		_ = mochifix.Disconnect(s.cl, packets.ErrServerBusy, "session not resumed: "+err.Error())
		return
	}
	m.log.Info("cluster: session resumed", "client", s.cl.ID, "from_cursor", r.from, "replayed", r.sent,
		"qos2_again", r.q2again, "qos2_skipped", r.q2skip, "took", time.Since(r.started).Round(time.Millisecond))
	m.write(s, 0)
}

func (m *sessions) newReplay(s *session) *replay {
	r := &replay{m: m, s: s, cl: s.cl, node: m.c.cfg.Node, idx: mqtt.NewTopicsIndex(), next: s.cursor + 1,
		from: s.cursor, started: time.Now()}
	seen := map[string]bool{}
	s.mu.Lock()
	for _, sub := range s.subs {
		if mqtt.IsSharedFilter(sub.Filter) {
			continue
		}
		r.idx.Subscribe(s.cl.ID, sub)
		for _, f := range FilterSubjects(sub.Filter) {
			if !seen[f] {
				seen[f] = true
				r.subjs = append(r.subjs, f)
			}
		}
	}
	s.mu.Unlock()
	r.subjs = disjointSubjects(r.subjs)
	window := int(m.h.server.Options.Capabilities.MaximumInflight) / 2
	if rm := int(s.cl.Properties.Props.ReceiveMaximum); rm > 0 {
		window = min(window, rm) // [MQTT-3.3.4-9]
	}
	r.limit = max(window, 1)
	return r
}

// resumeWithin bounds how long a resume keeps trying JetStream calls that fail: just after a node's death
// they time out until the stream's leader is elected again.
const resumeWithin = 30 * time.Second

func (r *replay) run() error {
	deadline := time.Now().Add(resumeWithin)
	if len(r.subjs) > 0 {
		for err := r.open(); err != nil; err = r.open() {
			if r.cl.Closed() {
				return errClientGone
			}
			if time.Now().After(deadline) {
				return err
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	for {
		if r.reopen {
			if err := r.open(); err != nil {
				if r.cl.Closed() {
					return errClientGone
				}
				if time.Now().After(deadline) {
					return err
				}
				time.Sleep(250 * time.Millisecond)
				continue
			}
		}
		if err := r.catchUp(); err != nil {
			return err
		}
		// The hand-over does not wait for acknowledgements (the client's own publishes wait while it runs, so it
		// might not read them): leave room in the window first, or live delivery would find it full after.
		if err := r.room(false, r.limit/2); err != nil {
			return err
		}
		done, err := r.handOver()
		if done {
			return nil
		}
		time.Sleep(100 * time.Millisecond) // local publishes did not settle: let them run before the next try
		if err != nil {
			if errors.Is(err, errClientGone) || errors.Is(err, errReplayStalled) || time.Now().After(deadline) {
				return err
			}
			// Most likely the stream's leader moved: read on from where the replay stands, with a new consumer.
			r.closeConsumer()
			r.reopen = r.cons != nil
		}
	}
}

// catchUp delivers the queue until handOverRest messages or fewer are left, or until the next one is another
// node's that routing has not reached yet.
func (r *replay) catchUp() error {
	for {
		if r.cl.Closed() {
			return errClientGone
		}
		if len(r.buf) == 0 {
			if r.cons == nil || r.left <= handOverRest {
				return r.flushHeld()
			}
			if err := r.flushHeld(); err != nil {
				return err
			}
			if err := r.fetch(); err != nil {
				return err
			}
			continue
		}
		d := r.buf[0]
		if d.Origin != r.node && d.Seq > r.m.routedSeq.Load() && (r.flushHeld() != nil || !r.waitRouted(d.Seq)) {
			return r.flushHeld()
		}
		if err := r.deliver(&d, false); err != nil {
			return err
		}
		r.buf = r.buf[1:]
		if r.cl.State.Inflight.Len() == 0 {
			r.s.mu.Lock()
			r.s.cursor, r.s.dirty = max(r.s.cursor, d.Through()), true
			r.s.coverAt = time.Now()
			r.s.mu.Unlock()
		}
	}
}

func (r *replay) waitRouted(seq uint64) bool {
	deadline := time.Now().Add(200 * time.Millisecond)
	for r.m.routedSeq.Load() < seq {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
	return true
}

// handOver delivers the rest and makes the subscriptions live while nothing else is delivered here. false:
// local publishes did not settle in time; catch up and try again.
func (r *replay) handOver() (bool, error) {
	m := r.m
	m.switchMu.Lock()
	defer m.switchMu.Unlock()
	if !m.gate.shut(250 * time.Millisecond) {
		return false, nil
	}
	defer m.gate.open()
	m.routeMu.Lock()
	defer m.routeMu.Unlock()
	select { // this node's messages sent so far are in the stream before its end is read
	case <-m.c.pub.flushed():
	case <-time.After(m.c.opts.OpTimeout):
		return false, nil
	}
	routed := m.routedSeq.Load()
	if r.cons != nil {
		ctx, cancel := context.WithTimeout(context.Background(), m.c.opts.OpTimeout)
		info, err := m.c.b.stream.Info(ctx)
		cancel()
		if err != nil {
			return false, err
		}
		end := info.State.LastSeq
		ctx, cancel = context.WithTimeout(context.Background(), m.c.opts.OpTimeout)
		ci, err := r.cons.Info(ctx) // what the consumer has now: every message up to end, so no fetch waits
		cancel()
		if err != nil {
			return false, err
		}
		if ci.Delivered.Consumer != r.delivered {
			return false, errReplayGap // sent by the server, never received: read again from r.next
		}
		r.left = ci.NumPending
		var skipped uint64 // the first message left to live delivery: where to read again if this fails
		for {
			if len(r.buf) == 0 {
				if r.left == 0 || r.next > end {
					break
				}
				err := r.flushHeld()
				if err == nil {
					err = r.fetch()
				}
				if err != nil {
					r.rewind(skipped)
					return false, err
				}
				continue
			}
			d := r.buf[0]
			if d.Seq > end {
				break
			}
			r.buf = r.buf[1:]
			if d.Origin != r.node && d.Seq > routed {
				if skipped == 0 {
					skipped = d.Seq
				}
				continue // routing delivers it once live
			}
			if err := r.deliver(&d, true); err != nil {
				r.rewind(skipped)
				return false, err
			}
		}
		if err := r.receivedAll(); err != nil {
			r.rewind(skipped)
			return false, err
		}
	}
	if err := r.flushHeld(); err != nil {
		return false, err
	}
	r.goLive()
	r.s.replaying.Store(false)
	return true, nil
}

// rewind makes the next fetch read from seq again (a failed hand-over left messages from seq on to live
// delivery, which did not start); own messages after it that were delivered come again.
func (r *replay) rewind(seq uint64) {
	if seq == 0 {
		return
	}
	r.buf, r.next = nil, seq
}

// goLive puts the session's subscriptions into mochi's topic tree; one the client made meanwhile stays as
// the client made it.
func (r *replay) goLive() {
	srv := r.m.h.server
	r.s.mu.Lock()
	var filters []string
	for f, sub := range r.s.subs {
		if _, ok := r.cl.State.Subscriptions.Get(f); ok {
			continue
		}
		if srv.Topics.Subscribe(r.cl.ID, sub) {
			atomic.AddInt64(&srv.Info.Subscriptions, 1)
		}
		r.cl.State.Subscriptions.Add(f, sub)
		filters = append(filters, f)
	}
	r.s.mu.Unlock()
	for _, f := range filters {
		r.m.h.shared.join(r.cl, f) // a shared subscription: a member of its group again (others are ignored)
	}
}

// deliver sends one queued message to the client, as mochi's delivery to one subscriber would.
func (r *replay) deliver(d *Delivery, handingOver bool) error {
	now := r.m.c.opts.Now()
	pk, ok := packetOf(&d.Message, now)
	if !ok {
		return nil // expired [MQTT-3.3.2-5]
	}
	sub, ok := r.idx.Subscribers(pk.TopicName).Subscriptions[r.cl.ID]
	if !ok {
		return nil // a subject filter is wider than the MQTT filter, or the client unsubscribed meanwhile
	}
	if sub.NoLocal && d.ClientID == r.cl.ID {
		return nil // [MQTT-3.8.3-3]
	}
	if r.m.acl == nil || !r.m.acl(r.cl, pk.TopicName, false) {
		return nil
	}
	pk.Origin = d.ClientID
	pk.FixedHeader.Retain = d.Retain && sub.RetainAsPublished && r.cl.Properties.ProtocolVersion == 5 // [MQTT-3.3.1-12]
	if len(sub.Identifiers) > 0 {                                                                     // [MQTT-3.3.4-3]
		for _, id := range sub.Identifiers {
			pk.Properties.SubscriptionIdentifier = append(pk.Properties.SubscriptionIdentifier, id)
		}
		slices.Sort(pk.Properties.SubscriptionIdentifier)
	}
	srv := r.m.h.server
	pk.FixedHeader.Qos = min(pk.FixedHeader.Qos, sub.Qos, srv.Options.Capabilities.MaximumQos)
	pk.PacketID = 0
	skip, again, fp := r.qos2Lookup(d, pk.FixedHeader.Qos) // a QoS 2 message the client had (sessions_qos2_resume.go)
	if skip {
		return nil
	}
	if pk.FixedHeader.Qos > 0 {
		if again != 0 {
			pk.PacketID, pk.FixedHeader.Dup = again, true // its place in the window was held [MQTT-4.3.3-9]
		} else {
			if err := r.room(handingOver, r.limit); err != nil {
				return err
			}
			id, err := r.cl.NextPacketID() // [MQTT-4.3.2-1]
			if err != nil {
				return err
			}
			pk.PacketID = uint16(id)
		}
		if e := pk.Properties.MessageExpiryInterval; e > 0 {
			pk.Expiry = now.Unix() + int64(e) // mochi writes what is left when it (re)sends [MQTT-3.3.2-6]
		}
		if r.cl.State.Inflight.Set(pk) {
			atomic.AddInt64(&srv.Info.Inflight, 1)
		}
		if again == 0 {
			r.qos2Record(&pk, d.Seq, fp)
		}
	}
	if err := r.write(pk); err != nil {
		return errClientGone
	}
	r.sent++
	return nil
}

// room waits until the client has fewer than limit messages in flight. During the hand-over (everything else
// held) only mochi's own limit, the server's maximum in flight, applies, and only for OpTimeout.
func (r *replay) room(handingOver bool, limit int) error {
	var deadline time.Time
	if handingOver {
		limit = int(r.m.h.server.Options.Capabilities.MaximumInflight)
		deadline = time.Now().Add(r.m.c.opts.OpTimeout)
	}
	limit = max(limit, 1)
	for r.cl.State.Inflight.Len()-r.qos2Reserved() >= limit {
		if err := r.flushHeld(); err != nil { // the client acknowledges only what it got
			return err
		}
		if r.cl.Closed() {
			return errClientGone
		}
		if !deadline.IsZero() && time.Now().After(deadline) {
			return errReplayStalled
		}
		select {
		case <-r.s.wake:
		case <-time.After(50 * time.Millisecond):
		case <-r.m.stop:
			return errClientGone
		}
	}
	return nil
}

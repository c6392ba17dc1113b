package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/nats-io/nats.go/jetstream"
)

// sessions keeps this node's persistent MQTT sessions in the idmq-sessions bucket, so that a client resumes its
// session on any node (sessions_resume.go). A session is its subscriptions and a cursor: a stream sequence such
// that the client received and acknowledged every message up to it. Messages after the cursor are in the stream
// (for cluster.retention) and are replayed on resume; QoS 0/1 ones the client had already received come again
// (at least once), QoS 2 ones do not (qos2Log, sessions_qos2.go).
//
// The cursor rule: the cursor moves to the routing consumer's position L only at a moment when (1) every stream
// message up to L was handed to mochi here (the routing consumer delivered the other nodes' ones, and no local
// publish is between the cluster hook and mochi's delivery: localGate), and (2) the client has nothing in flight,
// so everything handed to it was acknowledged. Checked when an acknowledgement empties the window (at most every
// cursorCheckEvery) and by the flush loop; written at most once a flushInterval, on SUBSCRIBE/UNSUBSCRIBE (before
// the SUBACK) and at disconnect.
//
// A persistent session that goes offline leaves this node: its record is written and mochi's copy dropped, so no
// node queues anything for an offline client; the stream is its queue.
type sessions struct {
	h   *Hook
	c   *Cluster
	log *slog.Logger
	acl func(cl *mqtt.Client, topic string, write bool) bool

	gate      localGate
	routeMu   sync.Mutex                 // held while a routed message is injected, and by a resume handing over to live
	routedSeq atomic.Uint64              // the last other nodes' message injected here; written under routeMu
	routing   atomic.Pointer[routedMark] // the routed QoS 2 message being injected (sessions_qos2_hook.go)
	switchMu  sync.Mutex                 // one hand-over at a time

	byClient  sync.Map // *mqtt.Client -> *session
	byID      sync.Map // client id -> *session, the latest of that id here
	hadOwner  sync.Map // *mqtt.Client -> struct{}: its CONNECT found an owner key (a session may exist)
	resumable sync.Map // *mqtt.Client -> *sessionRecord: to resume once mochi established the session

	started   atomic.Bool
	closeOnce sync.Once
	stop      chan struct{}
	done      chan struct{}
}

// session is one connected persistent session here.
type session struct {
	cl   *mqtt.Client
	user string

	mu        sync.Mutex
	subs      map[string]packets.Subscription
	cursor    uint64
	coverAt   time.Time // when the cursor was last found to cover everything handed to the client
	dirty     bool
	q2        atomic.Pointer[qos2Log] // its QoS 2 deliveries in flight; nil until it has one
	replay    *replay                 // while replaying; its index follows unsubscribes
	replaying atomic.Bool
	lastCheck atomic.Int64  // unix ns of the last cursor check
	wake      chan struct{} // an acknowledgement freed room in the window
	replayed  chan struct{} // closed when the replay ended (closed at once without one)
	final     chan struct{} // closed once the disconnect was handled (record written)
}

const (
	flushInterval    = time.Second
	cursorCheckEvery = 100 * time.Millisecond
)

func newSessions(h *Hook, acl func(*mqtt.Client, string, bool) bool) *sessions {
	return &sessions{h: h, c: h.c, log: h.log, acl: acl, stop: make(chan struct{}), done: make(chan struct{})}
}

func (m *sessions) start() {
	m.started.Store(true)
	go m.flushLoop()
}

// close stops the flush loop; safe to call more than once, and without start.
func (m *sessions) close() {
	m.closeOnce.Do(func() {
		close(m.stop)
		if m.started.Load() {
			<-m.done
		}
	})
}

// readable checks, for a CONNECT that may resume a session, that the sessions bucket answers (waiting out an
// election), so that a node whose bucket lost its leader refuses the client (0x88, it comes back) rather than
// answering it with a new, empty session.
func (m *sessions) readable(id string) error {
	ctx, cancel := context.WithTimeout(context.Background(), ElectionWait)
	defer cancel()
	_, err := throughElection(m.c, ctx, func(ctx context.Context) (jetstream.KeyValueEntry, error) {
		return m.c.b.sessions.Get(ctx, ClientKey(id))
	})
	if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("cluster: reading the session of client %q: %w", id, err)
	}
	return nil
}

// persistent: the session outlives the connection [MQTT-3.1.2-23], 3.1.1: clean session 0.
func persistent(cl *mqtt.Client) bool {
	if cl.Properties.ProtocolVersion == 5 {
		return cl.Properties.Props.SessionExpiryInterval > 0
	}
	return !cl.Properties.Clean
}

func (m *sessions) expiryOf(cl *mqtt.Client) uint32 {
	if cl.Properties.ProtocolVersion == 5 {
		return cl.Properties.Props.SessionExpiryInterval
	}
	return m.h.server.Options.Capabilities.MaximumSessionExpiryInterval
}

// establish runs before mochi looks for a local session to inherit. A clean start ends the client's session
// in the cluster [MQTT-3.1.2-4]; otherwise a session in the bucket that this node does not hold is put in
// front of mochi as an empty offline client, so mochi takes it over and answers Session Present
// [MQTT-3.2.2-3]; its subscriptions and queue follow in resume.
func (m *sessions) establish(cl *mqtt.Client, pk packets.Packet) {
	_, hadOwner := m.hadOwner.LoadAndDelete(cl)
	key := ClientKey(cl.ID)
	ctx, cancel := context.WithTimeout(context.Background(), m.c.opts.OpTimeout)
	defer cancel()
	if pk.Connect.Clean {
		if hadOwner {
			var wg sync.WaitGroup // both at once: a clean start waits one round trip, as without QoS 2 state
			wg.Go(func() { m.qos2Ended(ctx, m.previous(cl), cl.ID) })
			if err := m.c.b.sessions.Delete(ctx, key); err != nil {
				m.log.Warn("cluster: ending the previous session", "client", cl.ID, "err", err)
			}
			wg.Wait()
		}
		return
	}
	if old := m.previous(cl); old != nil && old.cl.Closed() {
		// A connection of this client here is ending: its record is the session once written. (A live one
		// is taken over by mochi below.)
		select {
		case <-old.final:
		case <-time.After(m.c.opts.OpTimeout):
		}
	}
	if cur, ok := m.h.server.Clients.Get(cl.ID); ok {
		if !cur.Closed() {
			if s := m.of(cur); s != nil && s.q2.Load() != nil {
				s.q2.Load().unreserve(cur, m.h.server) // a replay's reservations are not for mochi to send
			}
			return // connected here: mochi takes the live session over, window and all
		}
		m.dropLocal(cur)
	}
	// A bucket whose leader died with its node is waited for: reading nothing there must not start the client
	// afresh, which would drop the session it came back for.
	rctx, rcancel := context.WithTimeout(context.Background(), ElectionWait)
	defer rcancel()
	e, err := throughElection(m.c, rctx, func(ctx context.Context) (jetstream.KeyValueEntry, error) {
		return m.c.b.sessions.Get(ctx, key)
	})
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return
	}
	if err != nil {
		// mochi answers the CONNECT after this hook whatever it does: end the connection instead, so the client
		// comes back (OnConnect's check made this rare: the bucket answered a moment ago).
		m.log.Error("cluster: the client's session could not be read; connection ended", "client", cl.ID, "err", err)
		cl.Stop(fmt.Errorf("cluster: reading the session: %w", err))
		return
	}
	var rec sessionRecord
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		m.log.Warn("cluster: unreadable session record; starting a new session", "client", cl.ID, "err", err)
		return
	}
	if rec.User != m.h.identity(cl) {
		return // another user's session is not resumed (takeover rules); the new one replaces it
	}
	// A record without a disconnect time is a session whose node died with the client connected: when is not
	// known, so it does not expire until resumed (better a late session than a lost one).
	if rec.Disconnected != 0 && m.c.opts.Now().Unix() > rec.Disconnected+int64(rec.Expiry) {
		_ = m.c.b.sessions.Delete(ctx, key) // expired [MQTT-3.1.2-23]
		m.qos2Ended(ctx, nil, cl.ID)
		return
	}
	rec.qos2, err = throughElection(m.c, rctx, func(ctx context.Context) ([]*qos2Entry, error) {
		return loadQoS2(ctx, m.c.b.qos2, key)
	})
	if err != nil {
		m.log.Warn("cluster: reading the session's QoS 2 state; QoS 2 messages may come twice", "client", cl.ID, "err", err)
	}
	ph := m.h.server.NewClient(nil, "cluster", cl.ID, false)
	ph.Properties.ProtocolVersion = cl.Properties.ProtocolVersion
	ph.Properties.Username = cl.Properties.Username
	m.qos2Pubrels(ph, rec.qos2)
	m.h.server.Clients.Add(ph)
	m.resumable.Store(cl, &rec)
}

// established starts tracking a persistent session once mochi established it (after CONNACK). clean is the
// CONNECT's clean start: a session taken over here then starts empty [MQTT-3.1.2-4].
func (m *sessions) established(cl *mqtt.Client, clean bool) {
	v, resuming := m.resumable.LoadAndDelete(cl)
	var rec *sessionRecord
	if resuming {
		rec = v.(*sessionRecord)
	}
	var old *session
	if !clean {
		old = m.previous(cl)
	}
	if !resuming && !persistent(cl) && old == nil {
		return
	}
	s := &session{cl: cl, user: m.h.identity(cl), subs: map[string]packets.Subscription{},
		wake: make(chan struct{}, 1), replayed: make(chan struct{}), final: make(chan struct{})}
	for f, sub := range cl.State.Subscriptions.GetAll() {
		s.subs[f] = sub
	}
	s.cursor = m.position()
	if !resuming && old != nil {
		// A session taken over here from a live connection: mochi moved its window here, so its cursor holds.
		// Its subscriptions are taken from the session, not mochi's copy, which lacks those of a replay that
		// had not gone live; and a replay the takeover interrupted starts again here.
		select {
		case <-old.replayed:
		case <-time.After(m.c.opts.OpTimeout):
		}
		if q := old.q2.Load(); q != nil { // the same record: mochi moved the window with its packet ids
			s.q2.Store(q)
		}
		old.mu.Lock()
		s.cursor = old.cursor
		if old.replaying.Load() {
			rec, resuming = &sessionRecord{Cursor: old.cursor}, true
		}
		for f, sub := range old.subs {
			if _, ok := s.subs[f]; !ok {
				s.subs[f] = sub
			}
		}
		old.mu.Unlock()
	}
	if resuming {
		for _, sub := range rec.Subs {
			s.subs[sub.Filter] = sub.subscription()
		}
		s.cursor = rec.Cursor
		s.replaying.Store(true)
		if len(rec.qos2) > 0 {
			q := m.newQoS2(cl)
			q.adopt(rec.qos2)
			s.q2.Store(q)
		}
	} else {
		s.dirty = true
		close(s.replayed)
	}
	m.byClient.Store(cl, s)
	m.byID.Store(cl.ID, s)
	if resuming {
		go m.resume(s)
	}
}

// previous is the session of cl's client id that another connection here held (a takeover), or nil.
func (m *sessions) previous(cl *mqtt.Client) *session {
	if v, ok := m.byID.Load(cl.ID); ok && v.(*session).cl != cl {
		return v.(*session)
	}
	return nil
}

// position is the routing consumer's position: every message up to it was handled.
func (m *sessions) position() uint64 {
	if m.h.consumer == nil {
		return 0
	}
	return m.h.consumer.LastSeq()
}

func (m *sessions) of(cl *mqtt.Client) *session {
	if v, ok := m.byClient.Load(cl); ok {
		return v.(*session)
	}
	return nil
}

// advance moves s's cursor under the cursor rule (see sessions); throttled unless force.
func (m *sessions) advance(s *session, force bool) {
	now := time.Now().UnixNano()
	if !force && now-s.lastCheck.Load() < int64(cursorCheckEvery) {
		return
	}
	s.lastCheck.Store(now)
	if s.replaying.Load() {
		return // the replay moves it
	}
	at := time.Now()
	l := m.position()
	if m.gate.busy() || s.cl.State.Inflight.Len() != 0 {
		return
	}
	s.mu.Lock()
	if l >= s.cursor {
		s.coverAt = at
	}
	if l > s.cursor {
		s.cursor, s.dirty = l, true
	}
	s.mu.Unlock()
}

// subscribed records granted subscriptions before the SUBACK goes out.
func (m *sessions) subscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	s := m.of(cl)
	if s == nil {
		return
	}
	m.advance(s, true)
	s.mu.Lock()
	for i, sub := range pk.Filters {
		if i < len(codes) && codes[i] < packets.ErrUnspecifiedError.Code {
			sub.Qos = min(sub.Qos, codes[i])
			s.subs[sub.Filter] = sub
		}
	}
	s.dirty = true
	s.mu.Unlock()
	m.write(s, 0)
}

func (m *sessions) unsubscribed(cl *mqtt.Client, pk packets.Packet) {
	s := m.of(cl)
	if s == nil {
		return
	}
	s.mu.Lock()
	for _, sub := range pk.Filters {
		delete(s.subs, sub.Filter)
		if s.replay != nil {
			s.replay.idx.Unsubscribe(sub.Filter, cl.ID)
		}
	}
	s.dirty = true
	s.mu.Unlock()
	m.write(s, 0)
}

// acked: room in the client's window for a replay, and maybe a moment to move the cursor.
func (m *sessions) acked(cl *mqtt.Client) {
	s := m.of(cl)
	if s == nil {
		return
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
	if cl.State.Inflight.Len() == 0 {
		m.advance(s, false)
	}
}

// disconnected writes the session's last state, or deletes it when it ends, and drops mochi's copy of an
// offline session. Called before the owners' release, while this node still owns the client.
func (m *sessions) disconnected(cl *mqtt.Client, expire bool) {
	s := m.of(cl)
	if s == nil {
		m.hadOwner.Delete(cl) // a connection that ended before its session was established
		m.resumable.Delete(cl)
		return
	}
	defer close(s.final)
	m.hadOwner.Delete(cl)
	m.resumable.Delete(cl)
	m.byClient.Delete(cl)
	m.byID.CompareAndDelete(cl.ID, s)
	if cl.IsTakenOver() || m.supersededHere(cl) {
		return // the session carries on in another connection, here or on another node
	}
	select { // the replay sees the connection closed and stops
	case <-s.replayed:
	case <-time.After(m.c.opts.OpTimeout):
	}
	if expire || !persistent(cl) {
		if m.h.owners.owns(cl) {
			ctx, cancel := context.WithTimeout(context.Background(), m.c.opts.OpTimeout)
			defer cancel()
			if err := m.c.b.sessions.Delete(ctx, ClientKey(cl.ID)); err != nil {
				m.log.Warn("cluster: deleting an ended session", "client", cl.ID, "err", err)
			}
			m.qos2Ended(ctx, s, cl.ID)
		} else if q := s.q2.Load(); q != nil {
			q.close()
		}
		return
	}
	if q := s.q2.Load(); q != nil {
		q.close() // stored as it stands before the node gives the client up
	}
	m.advance(s, true)
	m.write(s, max(cl.StopTime(), 1))
	m.dropLocal(cl)
}

// supersededHere: mochi is handing cl's session to a new connection of the same client here. mochi marks cl
// taken over only after ending it, and cl's OnDisconnect may run first (seen under load: the session written
// and dropped as if offline, its subscriptions gone from the new connection); the code it ends cl with, 0x8E, is
// set before. A takeover from another node ends cl with 0x8E too, but then this node must store the session.
func (m *sessions) supersededHere(cl *mqtt.Client) bool {
	var code packets.Code
	return errors.As(cl.StopCause(), &code) && code.Code == packets.ErrSessionTakenOver.Code && !m.h.owners.takenAway(cl)
}

// dropLocal removes mochi's copy of an offline session: the record and the stream hold it now.
func (m *sessions) dropLocal(cl *mqtt.Client) {
	m.h.server.UnsubscribeClient(cl)
	cl.ClearInflights()
	if cur, ok := m.h.server.Clients.Get(cl.ID); ok && cur == cl {
		m.h.server.Clients.Delete(cl.ID)
	}
}

// flushLoop moves cursors of quiet sessions and writes changed records, once a flushInterval.
func (m *sessions) flushLoop() {
	defer close(m.done)
	t := time.NewTicker(flushInterval)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
		}
		m.byClient.Range(func(_, v any) bool {
			s := v.(*session)
			m.advance(s, true)
			s.mu.Lock()
			dirty := s.dirty
			s.mu.Unlock()
			if dirty && !s.cl.Closed() {
				m.write(s, 0)
			}
			return true
		})
	}
}

// The cluster hook's part in persistent sessions (Provides lists these; sharehook.go has the events both
// sessions and shared subscriptions follow).

func (h *Hook) OnSessionEstablish(cl *mqtt.Client, pk packets.Packet) {
	if !cl.Net.Inline {
		h.sessions.establish(cl, pk)
	}
}

// OnPublished: a local publish was delivered here (see localGate).
func (h *Hook) OnPublished(cl *mqtt.Client, _ packets.Packet) {
	if cl != h.injector && cl != h.shared.injector { // never entered the gate (OnPublish skips them)
		h.sessions.gate.exit(cl)
	}
}

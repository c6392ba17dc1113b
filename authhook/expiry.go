package authhook

import (
	"container/heap"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"weak"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// expiredReason is the DISCONNECT Reason String sent with 0xA0 when a client's credential expires.
const expiredReason = "token expired"

// session is what the hook knows about one connection: its current identity and its place in the hook's
// expiry queue. Sessions are keyed by *mqtt.Client (weakly), never by client id, so a newer connection that
// takes the client id over has a session of its own and is never ended by the old connection's deadline.
type session struct {
	client weak.Pointer[mqtt.Client] // also the key in Hook.sessions
	id     atomic.Pointer[Identity]  // replaced whole by re-authentication

	mu     sync.Mutex
	ending bool // a disconnect was decided: nothing re-arms or replaces the identity after it
	closed bool // Disconnect closed the network connection; mochi may not have noticed yet

	// Guarded by the expiry queue's lock, not mu.
	due    time.Duration // when the connection ends, on the queue's monotonic clock
	dueFor *Identity     // the identity due was computed for
	slot   int           // index in the queue's heap; -1 when not queued
}

// attach keys the session weakly by client: if a later hook refuses the CONNECT, mochi never calls
// OnDisconnect, and the entry (and any deadline) then goes away with the client instead of leaking.
func (h *Hook) attach(cl *mqtt.Client, id *Identity) {
	wp := weak.Make(cl)
	s := &session{client: wp, slot: -1}
	s.id.Store(id)
	if _, loaded := h.sessions.Swap(wp, s); !loaded {
		runtime.AddCleanup(cl, func(wp weak.Pointer[mqtt.Client]) { h.dropSession(wp) }, wp)
	}
}

func (h *Hook) session(cl *mqtt.Client) *session {
	v, ok := h.sessions.Load(weak.Make(cl))
	if !ok {
		return nil
	}
	return v.(*session)
}

func (h *Hook) detach(cl *mqtt.Client) { h.dropSession(weak.Make(cl)) }

func (h *Hook) dropSession(wp weak.Pointer[mqtt.Client]) {
	v, ok := h.sessions.LoadAndDelete(wp)
	if !ok {
		return
	}
	s := v.(*session)
	s.mu.Lock()
	s.ending = true
	h.stopTimerLocked(s)
	s.mu.Unlock()
}

// armLocked (re)schedules the end of the connection at id's expiry plus the leeway the token was verified
// with. Deadlines run on real time; the delay is measured with the injected clock. Anonymous identities (no
// expiry) get none.
func (h *Hook) armLocked(s *session, id *Identity) {
	if s.ending || id.ExpiresAt.IsZero() {
		h.stopTimerLocked(s)
		return
	}
	h.expiry.schedule(h, s, id, id.ExpiresAt.Add(h.ps().cfg.Leeway).Sub(h.now()))
}

// stopTimerLocked takes the session out of the expiry queue (the name predates the queue).
func (h *Hook) stopTimerLocked(s *session) { h.expiry.remove(h, s) }

// expired ends the connection if it still carries the identity its deadline was computed for; a
// re-authentication in between has replaced the identity and moved the deadline.
func (h *Hook) expired(s *session, id *Identity) {
	s.mu.Lock()
	if s.ending || s.id.Load() != id {
		s.mu.Unlock()
		return
	}
	s.ending = true
	s.mu.Unlock()
	cl := s.client.Value()
	if cl == nil || cl.Closed() {
		return
	}
	h.notify(AuthEvent{Kind: TokenExpired, Client: cl, Identity: id, Provider: id.Provider,
		Code: packets.Code{Code: packets.ErrMaxConnectTime.Code, Reason: expiredReason}})
	if err := h.Disconnect(cl, packets.ErrMaxConnectTime, expiredReason); err == nil {
		h.log.Info("authhook: credential expired, client disconnected", "provider", id.Provider, "username", id.Username,
			"client", cl.ID, "remote", cl.Net.Remote, "expired_at", id.ExpiresAt)
	}
}

// expiryQueue holds every armed session's deadline in one min-heap, with one runtime timer set to the
// earliest. An idle connection thus costs the hook a heap slot and no runtime timer or goroutine; arming,
// re-arming and removing are O(log n) under one lock, and the timer is reset only when the earliest deadline
// moves earlier. A deadline that leaves the queue early leaves the timer alone: it then fires for nothing and
// is set again to whatever is earliest.
//
// Each due session is ended on a goroutine of its own, as a per-session time.AfterFunc did: ending one
// writes a DISCONNECT with a write deadline, and a client that stopped reading must not delay the others.
// Those goroutines live only while a connection is being ended.
type expiryQueue struct {
	mu     sync.Mutex
	start  time.Time // origin of the queue's monotonic clock
	heap   sessionHeap
	timer  *time.Timer   // nil until the first deadline
	timeAt time.Duration // when timer fires, if set
	set    bool          // timer is set and has not fired
	closed bool
}

// clock is the queue's monotonic time; the zero queue starts its clock at first use.
func (q *expiryQueue) clockLocked() time.Duration {
	if q.start.IsZero() {
		q.start = time.Now()
	}
	return time.Since(q.start)
}

// schedule queues s to end in delay, for id, replacing any earlier deadline of s.
func (q *expiryQueue) schedule(h *Hook, s *session, id *Identity, delay time.Duration) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	s.due, s.dueFor = q.clockLocked()+delay, id
	if s.slot < 0 {
		heap.Push(&q.heap, s)
		h.armed.Add(1)
	} else {
		heap.Fix(&q.heap, s.slot)
	}
	if !q.set || s.due < q.timeAt {
		q.setTimerLocked(h, s.due)
	}
}

func (q *expiryQueue) remove(h *Hook, s *session) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if s.slot < 0 {
		return
	}
	heap.Remove(&q.heap, s.slot)
	s.dueFor = nil
	h.armed.Add(-1)
}

func (q *expiryQueue) setTimerLocked(h *Hook, at time.Duration) {
	delay := at - q.clockLocked()
	if q.timer == nil {
		q.timer = time.AfterFunc(delay, func() { q.fire(h) })
	} else {
		q.timer.Reset(delay)
	}
	q.timeAt, q.set = at, true
}

// fire takes every due session off the queue, ends each, and sets the timer for the next deadline.
func (q *expiryQueue) fire(h *Hook) {
	q.mu.Lock()
	q.set = false
	now := q.clockLocked()
	for len(q.heap) > 0 && q.heap[0].due <= now {
		s := heap.Pop(&q.heap).(*session)
		id := s.dueFor
		s.dueFor = nil
		h.armed.Add(-1)
		go h.expired(s, id)
	}
	if len(q.heap) > 0 && !q.closed {
		q.setTimerLocked(h, q.heap[0].due)
	}
	q.mu.Unlock()
}

// close empties the queue and stops its timer; nothing is scheduled after it.
func (q *expiryQueue) close(h *Hook) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	for _, s := range q.heap {
		s.slot, s.dueFor = -1, nil
	}
	h.armed.Add(-int64(len(q.heap)))
	clear(q.heap)
	q.heap = nil
	if q.timer != nil {
		q.timer.Stop()
	}
	q.set = false
}

// sessionHeap orders sessions by deadline (container/heap); each session knows its slot, so that a
// re-authentication or a disconnect finds it without a search.
type sessionHeap []*session

func (sh sessionHeap) Len() int           { return len(sh) }
func (sh sessionHeap) Less(i, j int) bool { return sh[i].due < sh[j].due }
func (sh sessionHeap) Swap(i, j int) {
	sh[i], sh[j] = sh[j], sh[i]
	sh[i].slot, sh[j].slot = i, j
}
func (sh *sessionHeap) Push(x any) {
	s := x.(*session)
	s.slot = len(*sh)
	*sh = append(*sh, s)
}
func (sh *sessionHeap) Pop() any {
	old := *sh
	s := old[len(old)-1]
	old[len(old)-1] = nil // the backing array must not keep a session alive
	s.slot = -1
	*sh = old[:len(old)-1]
	return s
}

package authhook

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"weak"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// ExpiredReason is the DISCONNECT Reason String sent with 0xA0 when a client's credential expires.
const ExpiredReason = "token expired"

// session is what the hook knows about one connection: its current identity and the timer that ends the
// connection when that identity's credential expires. Sessions are keyed by *mqtt.Client (weakly), never by
// client id, so a newer connection that takes the client id over has a session of its own and is never
// touched by the old connection's timer.
type session struct {
	client weak.Pointer[mqtt.Client] // also the key in Hook.sessions
	id     atomic.Pointer[Identity]  // replaced whole by re-authentication

	mu     sync.Mutex
	timer  *time.Timer // nil when none is armed
	ending bool        // a disconnect was decided: nothing re-arms or replaces the identity after it
}

// attach keys the session weakly by client: if a later hook refuses the CONNECT, mochi never calls
// OnDisconnect, and the entry (and any timer) then goes away with the client instead of leaking.
func (h *Hook) attach(cl *mqtt.Client, id *Identity) {
	wp := weak.Make(cl)
	s := &session{client: wp}
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
// with. A timer costs no goroutine until it fires, so a hundred thousand connections cost a hundred
// thousand runtime timers and nothing else. Anonymous identities (no expiry) get none.
func (h *Hook) armLocked(s *session, id *Identity) {
	h.stopTimerLocked(s)
	if s.ending || id.ExpiresAt.IsZero() {
		return
	}
	// The callback holds the client weakly, so a timer never keeps a dead connection alive. Timers run on
	// real time; the delay is measured with the injected clock.
	delay := id.ExpiresAt.Add(h.cfg.Leeway).Sub(h.now())
	h.armed.Add(1)
	s.timer = time.AfterFunc(delay, func() { h.expired(s, id) })
}

func (h *Hook) stopTimerLocked(s *session) {
	if s.timer != nil && s.timer.Stop() {
		h.armed.Add(-1)
	}
	s.timer = nil
}

// expired ends the connection if it still carries the identity the timer was armed for; a re-authentication
// in between has replaced the identity and re-armed the timer.
func (h *Hook) expired(s *session, id *Identity) {
	h.armed.Add(-1)
	s.mu.Lock()
	if s.ending || s.id.Load() != id {
		s.mu.Unlock()
		return
	}
	s.ending = true
	s.timer = nil
	s.mu.Unlock()
	cl := s.client.Value()
	if cl == nil {
		return
	}
	if err := h.Disconnect(cl, packets.ErrMaxConnectTime, ExpiredReason); err == nil {
		h.log.Info("authhook: credential expired, client disconnected", "provider", id.Provider, "username", id.Username,
			"client", cl.ID, "remote", cl.Net.Remote, "expired_at", id.ExpiresAt)
	}
}

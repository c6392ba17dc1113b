package events

import (
	"errors"
	"runtime"
	"sync"
	"weak"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/idmq/idmq/authhook"
)

// Hook turns mochi's session events and authhook's decisions into events: client.connected once mochi has
// sent the CONNACK (OnSessionEstablished), client.disconnected from OnDisconnect, the others from OnAuthEvent
// (pass it as authhook.Options.OnAuthEvent). A connection's events reach the Dispatcher in the order they
// happened: mochi calls OnSessionEstablished and OnDisconnect on the client's goroutine, authhook reports an
// expiry or revocation before it ends the connection, and a decision that lands between the client's
// authentication and its CONNACK (a revocation a moment after the CONNECT) is held until client.connected is out.
type Hook struct {
	mqtt.HookBase
	d        *Dispatcher
	identity func(cl *mqtt.Client) (*authhook.Identity, bool)
	conns    sync.Map // weak.Pointer[mqtt.Client] -> *conn, from OnSessionEstablish to OnDisconnect
}

// conn is what OnDisconnect needs once authhook has dropped the client's identity.
type conn struct {
	mu          sync.Mutex // held while emitting, so a connection's events leave in order
	username    string
	provider    string
	established bool          // client.connected is out
	held        []Event       // auth decisions made before client.connected, sent right after it
	end         *packets.Code // why idmq ended the connection (expiry, revocation, refused re-authentication)
}

var _ mqtt.Hook = (*Hook)(nil)

// NewHook emits to d; identity is the auth hook's Identity.
func NewHook(d *Dispatcher, identity func(cl *mqtt.Client) (*authhook.Identity, bool)) *Hook {
	return &Hook{d: d, identity: identity}
}

// ID implements mqtt.Hook.
func (h *Hook) ID() string { return "idmq-events" }

// Provides implements mqtt.Hook.
func (h *Hook) Provides(b byte) bool {
	return b == mqtt.OnSessionEstablish || b == mqtt.OnSessionEstablished || b == mqtt.OnDisconnect
}

// OnSessionEstablish starts the connection's record once it is authenticated, before the CONNACK. mochi calls
// no OnDisconnect when the CONNACK cannot be written, so the record is keyed weakly and goes with the client.
func (h *Hook) OnSessionEstablish(cl *mqtt.Client, _ packets.Packet) {
	c := &conn{}
	if id, ok := h.identity(cl); ok {
		c.username, c.provider = id.Username, id.Provider
	}
	wp := weak.Make(cl)
	if _, loaded := h.conns.Swap(wp, c); !loaded {
		runtime.AddCleanup(cl, func(wp weak.Pointer[mqtt.Client]) { h.conns.Delete(wp) }, wp)
	}
}

func (h *Hook) conn(cl *mqtt.Client) *conn {
	if v, ok := h.conns.Load(weak.Make(cl)); ok {
		return v.(*conn)
	}
	return nil
}

// OnSessionEstablished emits client.connected, then any decision held for it.
func (h *Hook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	c := h.conn(cl)
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.established = true
	h.d.Emit(Event{Type: ClientConnected, ClientID: cl.ID, Username: c.username, Provider: c.provider, RemoteAddr: cl.Net.Remote})
	for _, e := range c.held {
		h.d.Emit(e)
	}
	c.held = nil
}

// OnDisconnect emits client.disconnected, with the code idmq ended the connection with if it did, else the
// code of the client's DISCONNECT or of mochi's decision, else the network error.
func (h *Hook) OnDisconnect(cl *mqtt.Client, err error, _ bool) {
	v, ok := h.conns.LoadAndDelete(weak.Make(cl))
	if !ok {
		return // never authenticated (refused at CONNECT)
	}
	c := v.(*conn)
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.established {
		return // ended before its CONNACK: it never connected, so it never disconnects
	}
	e := Event{Type: ClientDisconnected, ClientID: cl.ID, Username: c.username, Provider: c.provider, RemoteAddr: cl.Net.Remote}
	if err == nil {
		err = cl.StopCause() // a client's DISCONNECT: mochi stopped it with the DISCONNECT's code
	}
	var code packets.Code
	switch {
	case c.end != nil:
		e.ReasonCode, e.Reason = Code(c.end.Code), c.end.Reason
	case errors.As(err, &code):
		e.ReasonCode, e.Reason = Code(code.Code), code.Reason
	case err != nil:
		e.Reason = err.Error()
	}
	h.d.Emit(e)
}

// OnAuthEvent emits auth.failed, client.token_refreshed, client.token_expired and session.revoked.
func (h *Hook) OnAuthEvent(a authhook.AuthEvent) {
	e := Event{Provider: a.Provider}
	if cl := a.Client; cl != nil {
		e.ClientID, e.RemoteAddr = cl.ID, cl.Net.Remote
	}
	if a.Identity != nil {
		e.Username = a.Identity.Username
	}
	switch a.Kind {
	case authhook.AuthRefused:
		e.Type, e.Reason = AuthFailed, string(a.Reason)
		e.ReasonCode = Code(a.Code.Code)
	case authhook.TokenRefreshed:
		e.Type = ClientTokenRefresh
	case authhook.TokenExpired:
		e.Type = ClientTokenExpired
		e.ReasonCode, e.Reason = Code(a.Code.Code), a.Code.Reason
	case authhook.CredentialsRevoked:
		e.Type = SessionRevoked
		e.ReasonCode, e.Reason = Code(a.Code.Code), a.Code.Reason
	default:
		return
	}
	var c *conn
	if a.Client != nil {
		c = h.conn(a.Client)
	}
	if c == nil { // a refused CONNECT, or a connection already over
		h.d.Emit(e)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if a.Kind != authhook.TokenRefreshed && a.Identity != nil && c.end == nil {
		code := a.Code
		c.end = &code // a refused re-authentication, an expiry or a revocation ends the connection
	}
	if !c.established {
		c.held = append(c.held, e)
		return
	}
	h.d.Emit(e)
}

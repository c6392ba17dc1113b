package events

import (
	"errors"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/idmq/idmq/authhook"
)

// Hook turns mochi's session events and authhook's decisions into events: client.connected from
// OnSessionEstablished, client.disconnected from OnDisconnect, the others from OnAuthEvent (pass it as
// authhook.Options.OnAuthEvent). Connect, refresh, expiry or revocation, then disconnect, all reach the
// Dispatcher in that order: mochi calls OnSessionEstablished and OnDisconnect on the client's goroutine,
// and authhook reports an expiry or revocation before it ends the connection.
type Hook struct {
	mqtt.HookBase
	d        *Dispatcher
	identity func(cl *mqtt.Client) (*authhook.Identity, bool)
	conns    sync.Map // *mqtt.Client -> *conn, from OnSessionEstablished to OnDisconnect
}

// conn is what OnDisconnect needs once authhook has dropped the client's identity.
type conn struct {
	mu       sync.Mutex
	username string
	provider string
	end      *packets.Code // why idmq ended the connection (expiry, revocation, refused re-authentication)
}

var _ mqtt.Hook = (*Hook)(nil)

// NewHook emits to d; identity is the auth hook's Identity.
func NewHook(d *Dispatcher, identity func(cl *mqtt.Client) (*authhook.Identity, bool)) *Hook {
	return &Hook{d: d, identity: identity}
}

// ID implements mqtt.Hook.
func (h *Hook) ID() string { return "idmq-events" }

// Provides implements mqtt.Hook.
func (h *Hook) Provides(b byte) bool { return b == mqtt.OnSessionEstablished || b == mqtt.OnDisconnect }

// OnSessionEstablished emits client.connected.
func (h *Hook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	c := &conn{}
	if id, ok := h.identity(cl); ok {
		c.username, c.provider = id.Username, id.Provider
	}
	h.conns.Store(cl, c)
	h.d.Emit(Event{Type: ClientConnected, ClientID: cl.ID, Username: c.username, Provider: c.provider, RemoteAddr: cl.Net.Remote})
}

// OnDisconnect emits client.disconnected, with the code idmq ended the connection with if it did, else the
// code of the client's DISCONNECT or of mochi's decision, else the network error.
func (h *Hook) OnDisconnect(cl *mqtt.Client, err error, _ bool) {
	v, ok := h.conns.LoadAndDelete(cl)
	if !ok {
		return // never established (refused after OnConnect)
	}
	c := v.(*conn)
	e := Event{Type: ClientDisconnected, ClientID: cl.ID, Username: c.username, Provider: c.provider, RemoteAddr: cl.Net.Remote}
	c.mu.Lock()
	end := c.end
	c.mu.Unlock()
	if err == nil {
		err = cl.StopCause() // a client's DISCONNECT: mochi stopped it with the DISCONNECT's code
	}
	var code packets.Code
	switch {
	case end != nil:
		e.ReasonCode, e.Reason = Code(end.Code), end.Reason
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
	if a.Kind != authhook.TokenRefreshed && a.Identity != nil && a.Client != nil {
		h.ending(a.Client, a.Code) // a refused re-authentication, an expiry or a revocation ends the connection
	}
	h.d.Emit(e)
}

func (h *Hook) ending(cl *mqtt.Client, code packets.Code) {
	if v, ok := h.conns.Load(cl); ok {
		c := v.(*conn)
		c.mu.Lock()
		if c.end == nil {
			c.end = &code
		}
		c.mu.Unlock()
	}
}

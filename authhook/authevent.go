package authhook

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// AuthEventKind is a decision of the hook about a client that Options.OnAuthEvent is told of.
type AuthEventKind int

// The kinds of AuthEvent.
const (
	// AuthRefused: a CONNECT (Identity nil) or an MQTT 5 re-authentication (Identity: the connection's) was
	// refused; Code is the CONNACK or DISCONNECT sent.
	AuthRefused AuthEventKind = iota + 1
	// TokenRefreshed: an MQTT 5 re-authentication replaced the connection's identity (Identity: the new one).
	TokenRefreshed
	// TokenExpired: the connection is being ended with DISCONNECT 0xA0 because its credential expired.
	TokenExpired
	// CredentialsRevoked: the connection is being ended with DISCONNECT 0x98 because its credential was revoked.
	CredentialsRevoked
)

// AuthEvent describes one decision. It carries no credential.
type AuthEvent struct {
	Kind     AuthEventKind
	Client   *mqtt.Client
	Identity *Identity // the verified identity concerned; nil for a refused CONNECT
	Provider string    // the provider concerned, when known
	Reason   Reason    // why, for AuthRefused
	Code     packets.Code
}

// notify calls Options.OnAuthEvent. For TokenExpired and CredentialsRevoked it runs before the DISCONNECT is
// written, so an observer sees the cause before mochi's OnDisconnect for the same connection.
func (h *Hook) notify(e AuthEvent) {
	if h.opts.OnAuthEvent != nil {
		h.opts.OnAuthEvent(e)
	}
}

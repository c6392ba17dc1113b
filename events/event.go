package events

import (
	"crypto/rand"
	"encoding/binary"
	"time"
)

// Type names what happened. The names are the webhook payload's "type" and the values of events filters.
type Type string

// The event types.
const (
	ClientConnected    Type = "client.connected"       // a session was established (after the CONNACK)
	ClientDisconnected Type = "client.disconnected"    // a connection ended, for whatever reason
	AuthFailed         Type = "auth.failed"            // a CONNECT or an MQTT 5 re-authentication was refused
	ClientTokenRefresh Type = "client.token_refreshed" // an MQTT 5 re-authentication replaced the token in place
	ClientTokenExpired Type = "client.token_expired"   // the token expired and the connection was ended (0xA0)
	SessionRevoked     Type = "session.revoked"        // the credential was revoked and the connection ended (0x98)
)

// Types lists every type, in the order the documentation gives them.
var Types = []Type{ClientConnected, ClientDisconnected, AuthFailed, ClientTokenRefresh, ClientTokenExpired, SessionRevoked}

// Event is one webhook payload. It never carries a token, a password or the CONNECT username of a client
// that failed to authenticate (some clients put their token there): Username and Provider are only ever
// what a verified credential said.
type Event struct {
	ID         string    `json:"id"` // unique; a receiver de-duplicates retries by it
	Type       Type      `json:"type"`
	Time       time.Time `json:"time"`
	Node       string    `json:"node"`
	ClientID   string    `json:"client_id,omitempty"`
	Username   string    `json:"username,omitempty"`
	Provider   string    `json:"provider,omitempty"`
	RemoteAddr string    `json:"remote_addr,omitempty"`
	// ReasonCode is the MQTT reason code sent (CONNACK for auth.failed, DISCONNECT otherwise) when there is
	// one; Reason says why in words (idmq's refusal reason, or the DISCONNECT reason).
	ReasonCode *byte  `json:"reason_code,omitempty"`
	Reason     string `json:"reason,omitempty"`
}

// Code is a helper for Event.ReasonCode.
func Code(c byte) *byte { return &c }

// crockford is the ULID alphabet: no I, L, O, U, so an id read aloud or typed is unambiguous.
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// NewID returns a ULID-shaped id: 48 bits of milliseconds then 80 random bits, 26 characters. Ids sort by
// time, which keeps a receiver's de-duplication index append-mostly, and 80 random bits make a collision
// within one millisecond negligible.
func NewID(now time.Time) string {
	var b [16]byte
	ms := uint64(now.UnixMilli())
	binary.BigEndian.PutUint16(b[0:2], uint16(ms>>32))
	binary.BigEndian.PutUint32(b[2:6], uint32(ms))
	_, _ = rand.Read(b[6:]) // crypto/rand.Read never fails (Go 1.24)
	hi := binary.BigEndian.Uint64(b[0:8])
	lo := binary.BigEndian.Uint64(b[8:16])
	var out [26]byte
	// 128 bits as 26 base-32 digits: the first digit holds the top 3 bits.
	for i := 25; i >= 0; i-- {
		out[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(out[:])
}

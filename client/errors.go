package client

import (
	"errors"
	"fmt"
)

// ErrAuth matches (with errors.Is) every refusal of the client's credentials: a CONNACK such as 0x86 or 0x87,
// or the DISCONNECT that ends a failed re-authentication. Retrying with the same key will not help; a broker
// that is down or restarting never produces it.
var ErrAuth = errors.New("client: the broker refused the credentials")

// ErrTokenExpired matches a DISCONNECT 0xA0: the broker ended the connection because its token expired before
// a refresh reached it (the token source kept failing, or the refresh came too late). The client reconnects
// with a fresh token by itself.
var ErrTokenExpired = errors.New("client: the connection's token expired")

// ReasonError is an MQTT 5 reason code the broker answered with: a refused CONNECT, a DISCONNECT, or a refused
// PUBLISH, SUBSCRIBE or UNSUBSCRIBE. Reason is the broker's reason string (idmq says why, never the token).
type ReasonError struct {
	Packet string // CONNACK, DISCONNECT, PUBACK, SUBACK or UNSUBACK
	Code   byte
	Reason string
	// Reauth is set on the DISCONNECT that answered the client's own AUTH: whatever its code (0x87 a token
	// that does not verify, 0x82 a method the broker would not accept), the credential was refused.
	Reauth bool
}

func (e *ReasonError) Error() string {
	during := ""
	if e.Reauth {
		during = " during re-authentication"
	}
	if e.Reason == "" {
		return fmt.Sprintf("client: %s 0x%02X%s", e.Packet, e.Code, during)
	}
	return fmt.Sprintf("client: %s 0x%02X%s: %s", e.Packet, e.Code, during, e.Reason)
}

// Is makes errors.Is(err, ErrAuth) and errors.Is(err, ErrTokenExpired) answer the caller's real question.
func (e *ReasonError) Is(target error) bool {
	switch target {
	case ErrAuth:
		return e.refusesCredentials()
	case ErrTokenExpired:
		return e.Packet == "DISCONNECT" && e.Code == 0xA0
	}
	return false
}

func (e *ReasonError) refusesCredentials() bool {
	switch e.Packet {
	case "CONNACK":
		switch e.Code {
		case 0x85, // Client Identifier not valid: idmq's devices provider checks the client id names the device
			0x86, 0x87, 0x8A, 0x8C: // bad user name or password, not authorized, banned, bad authentication method
			return true
		}
	case "DISCONNECT":
		return e.Reauth || e.Code == 0x87 || e.Code == 0x8C
	}
	return false
}

// TokenError is a failure of the token source: the client could not obtain a token, or what it obtained is
// not a JWT with an exp claim. At Connect it is returned at once; later it goes to OnError while the client
// retries with backoff.
type TokenError struct {
	Err error
}

func (e *TokenError) Error() string { return "client: token source: " + e.Err.Error() }
func (e *TokenError) Unwrap() error { return e.Err }

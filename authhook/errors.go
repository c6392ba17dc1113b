package authhook

import (
	"errors"
	"fmt"

	"github.com/idmq/idmq/refusal"
)

// Reason is the stable name of why a credential was refused: a refusal.Kind, whose table decides the CONNACK
// and DISCONNECT codes, Reason String, metric and log level. The same strings are the `reason` label of
// idmq_auth_total and the `error` codes of the HTTP token exchange, so never rename one.
type Reason = refusal.Kind

const (
	ReasonIssuerMismatch    = refusal.IssuerMismatch
	ReasonTokenExpired      = refusal.TokenExpired
	ReasonTokenNotYetValid  = refusal.TokenNotYetValid
	ReasonInvalidSignature  = refusal.InvalidSignature
	ReasonInvalidAudience   = refusal.InvalidAudience
	ReasonInvalidAZP        = refusal.InvalidAZP
	ReasonMissingClaim      = refusal.MissingClaim
	ReasonUnknownKID        = refusal.UnknownKID
	ReasonMalformed         = refusal.Malformed
	ReasonTokenTooLarge     = refusal.TokenTooLarge
	ReasonAlgNotAllowed     = refusal.AlgNotAllowed
	ReasonKeysUnavailable   = refusal.KeysUnavailable
	ReasonUsernameMismatch  = refusal.UsernameMismatch
	ReasonClientIDTaken     = refusal.ClientIDTaken
	ReasonBadAuthMethod     = refusal.BadAuthMethod
	ReasonMissingCredential = refusal.MissingCredential
	ReasonProviderNotFound  = refusal.ProviderNotFound
	ReasonTokenRevoked      = refusal.TokenRevoked

	// Device tokens (provider type devices).
	ReasonUnknownDevice   = refusal.UnknownDevice
	ReasonDeviceBlocked   = refusal.DeviceBlocked
	ReasonKeyExpired      = refusal.KeyExpired
	ReasonLifetimeTooLong = refusal.LifetimeTooLong
	ReasonIATSkew         = refusal.IATSkew
	ReasonProjectMismatch = refusal.ProjectMismatch
)

// Error is a refused credential. Callers tell decisions apart with Reason (or ReasonOf); the message is safe
// to show the client and to log: it never contains the token.
type Error struct {
	Reason   Reason
	Provider string // provider that refused, "" when none was selected
	Claim    string // the claim at fault, for missing_claim
	Message  string
	Err      error // underlying cause, if any
}

func (e *Error) Error() string {
	if e.Err != nil {
		return "authhook: " + e.Message + ": " + e.Err.Error()
	}
	return "authhook: " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// Is makes errors.Is(err, &Error{Reason: ReasonTokenExpired}) match on the reason alone.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Reason == e.Reason && t.Provider == "" && t.Claim == "" && t.Message == ""
}

// ReasonOf returns the reason of an authhook error, or "" for any other error.
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

func refuse(reason Reason, format string, args ...any) *Error {
	return &Error{Reason: reason, Message: fmt.Sprintf(format, args...)}
}

func refuseWrap(reason Reason, err error, format string, args ...any) *Error {
	return &Error{Reason: reason, Message: fmt.Sprintf(format, args...), Err: err}
}

func missingClaim(claim string) *Error {
	return &Error{Reason: ReasonMissingClaim, Claim: claim, Message: fmt.Sprintf("token has no %q claim", claim)}
}

// clip bounds values copied from an unverified token into messages and logs.
func clip(s string) string {
	const max = 80
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}

// ErrNotConnected is returned by Disconnect for a client that has no open network connection (already
// closed, by the client or by an earlier Disconnect, a persisted session whose owner is offline, or mochi's
// inline client).
var ErrNotConnected = errors.New("authhook: client is not connected")

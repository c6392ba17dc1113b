package authhook

import (
	"errors"
	"fmt"
)

// Reason is the stable name of why a credential was refused. The same strings are the `reason` label of
// idmq_auth_total and the `error` codes of the HTTP token exchange, so never rename one.
type Reason string

const (
	ReasonIssuerMismatch    Reason = "issuer_mismatch"
	ReasonTokenExpired      Reason = "token_expired"
	ReasonTokenNotYetValid  Reason = "token_not_yet_valid"
	ReasonInvalidSignature  Reason = "invalid_signature"
	ReasonInvalidAudience   Reason = "invalid_audience"
	ReasonInvalidAZP        Reason = "invalid_azp"
	ReasonMissingClaim      Reason = "missing_claim"
	ReasonUnknownKID        Reason = "unknown_kid"
	ReasonMalformed         Reason = "malformed"
	ReasonTokenTooLarge     Reason = "token_too_large"
	ReasonAlgNotAllowed     Reason = "alg_not_allowed"
	ReasonKeysUnavailable   Reason = "keys_unavailable"
	ReasonUsernameMismatch  Reason = "username_mismatch"
	ReasonClientIDTaken     Reason = "client_id_taken"
	ReasonBadAuthMethod     Reason = "bad_auth_method"
	ReasonMissingCredential Reason = "missing_credential"
	ReasonProviderNotFound  Reason = "provider_not_found"
	ReasonTokenRevoked      Reason = "token_revoked"

	// Device tokens (provider type devices).
	ReasonUnknownDevice   Reason = "unknown_device"    // the client id names no registered device
	ReasonDeviceBlocked   Reason = "device_blocked"    // the device is registered with blocked: true
	ReasonKeyExpired      Reason = "key_expired"       // every key of the device expired, or the token verifies only with an expired one
	ReasonLifetimeTooLong Reason = "lifetime_too_long" // exp - iat exceeds max_lifetime (+ leeway)
	ReasonIATSkew         Reason = "iat_skew"          // iat is further from now than iat_skew
	ReasonProjectMismatch Reason = "project_mismatch"  // the client id path names a project no devices provider serves
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

package client

import (
	"context"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/idmq/idmq/authhook"
)

// TokenSource returns a token for the next CONNECT or re-authentication. It is called at every connection
// attempt and before every refresh, never concurrently with itself. It may fetch from a network service (an
// exchange endpoint, a vault); ctx carries the connect timeout.
type TokenSource func(ctx context.Context) (string, error)

// DeviceToken mints a fresh device token at every call, exactly as `idmq token device` does (the one
// implementation, authhook.MintDeviceToken): signed with key, aud = project, lifetime ttl (1s..24h). alg ""
// picks the key's own algorithm (RS256, ES256, EdDSA).
func DeviceToken(key crypto.Signer, project, alg string, ttl time.Duration) TokenSource {
	return func(context.Context) (string, error) {
		return authhook.MintDeviceToken(key, project, alg, ttl, time.Now())
	}
}

// tokenExpiry reads exp from a JWT's payload. The signature is NOT checked, on purpose: the client holds no key
// that could check it (a device token is signed by the device itself, an IdP token by the IdP), the broker
// verifies every token it receives, and exp is used only to decide when to refresh. A lying exp costs the
// client an early refresh or a DISCONNECT 0xA0 and a reconnect, never access.
func tokenExpiry(token string) (time.Time, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}, fmt.Errorf("not a JWT (%d dot-separated parts, want 3)", len(parts))
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, fmt.Errorf("JWT payload is not base64url: %w", err)
	}
	var claims struct {
		Exp *json.Number `json:"exp"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return time.Time{}, fmt.Errorf("JWT payload is not a JSON object: %w", err)
	}
	if claims.Exp == nil {
		return time.Time{}, errors.New("JWT has no exp claim: the client cannot schedule its refresh")
	}
	exp, err := claims.Exp.Float64()
	if err != nil || exp <= 0 || exp >= 1<<40 {
		return time.Time{}, fmt.Errorf("JWT exp %q is not a plausible number of seconds", claims.Exp.String())
	}
	sec := math.Floor(exp)
	return time.Unix(int64(sec), int64((exp-sec)*float64(time.Second))), nil
}

// refreshAt is when a token obtained at obtained and expiring at exp is replaced: before ahead of its expiry,
// but never in the first half of its life, so a token shorter than 2*before is refreshed halfway rather than
// at once and in a loop.
func refreshAt(obtained, exp time.Time, before time.Duration) time.Time {
	at := exp.Add(-before)
	if half := obtained.Add(exp.Sub(obtained) / 2); at.Before(half) {
		at = half
	}
	return at
}

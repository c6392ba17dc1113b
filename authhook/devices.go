package authhook

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Device tokens (provider type devices) are the self-signed JWTs of Google Cloud IoT Core and ClearBlade IoT
// Core devices: header {alg, typ}, claims {iat, exp, aud: project}, no iss, no sub, signed with a key of the
// device. The device is named by the CONNECT client id, never by the token; the username is ignored.
//
// Selection. A token with an iss claim (any value) is an identity-provider or local token and is never
// checked against device keys. A token without iss, when devices providers exist, is a device token, and its
// provider is:
//   - the one whose project the client id names, for a client id of the form
//     projects/{project}/locations/{region}/registries/{registry}/devices/{device-id} (no provider with that
//     project: project_mismatch);
//   - otherwise (bare device id) the only devices provider, or, with several, the one whose project equals
//     the token's aud (none: invalid_audience; this is the one case where aud is read before the signature,
//     since without a provider there is no key to check).
//
// Checks, in this order (the first failure is the reason): alg allowed (RS256, ES256 by default; EdDSA by
// name; never HMAC); device known (unknown_device) and not blocked (device_blocked); the signature, with
// each of the device's keys that has not expired, at most maxDeviceKeys (every key expired, or the token
// verifies only with an expired key: key_expired; else invalid_signature); aud is exactly the project
// (invalid_audience); iat present and |now - iat| <= iat_skew (iat_skew); exp present and exp - iat <=
// max_lifetime + leeway (lifetime_too_long); exp + leeway in the future (token_expired); nbf, if present.
//
// Device tokens are not cached: the result depends on the client id and on the registry, which changes.
// Device ids are not secret (they are client ids, and the CONNACK reason string names unknown_device), so an
// unknown device is refused before any signature work rather than after a dummy one.

// deviceName is the device a client id names. project, region and registry come from a full path only.
// They are not checked beyond the project: one provider is one namespace of device ids.
type deviceName struct {
	id, project, region, registry string
	path                          bool
}

// parseDeviceClientID reads a bare device id or a Cloud IoT device path. Anything else is returned as a
// bare id, which validDeviceID then refuses.
func parseDeviceClientID(clientID string) deviceName {
	const prefix = "projects/"
	if !strings.HasPrefix(clientID, prefix) {
		return deviceName{id: clientID}
	}
	p := strings.Split(clientID, "/")
	if len(p) != 8 || p[2] != "locations" || p[4] != "registries" || p[6] != "devices" || slices.Contains(p, "") {
		return deviceName{id: clientID}
	}
	return deviceName{project: p[1], region: p[3], registry: p[5], id: p[7], path: true}
}

// deviceProvider verifies the device tokens of one devices provider.
type deviceProvider struct {
	name        string
	project     string
	algorithms  []string
	maxLifetime time.Duration
	iatSkew     time.Duration
	leeway      time.Duration
	now         func() time.Time
	registry    *deviceRegistry
}

func newDeviceProvider(name string, c *devicesSettings, spec *providerSpec, at, baseDir string, leeway time.Duration, now func() time.Time, log *slog.Logger) (*deviceProvider, error) {
	r, err := newDeviceRegistry(name, c, at, baseDir, log, now)
	if err != nil {
		return nil, err
	}
	dp := &deviceProvider{
		name:        name,
		project:     c.Project,
		algorithms:  spec.algorithms,
		maxLifetime: c.MaxLifetime,
		iatSkew:     c.IATSkew,
		leeway:      leeway,
		now:         now,
		registry:    r,
	}
	if dp.maxLifetime == 0 {
		dp.maxLifetime = defaultDeviceMaxLifetime
	}
	if dp.iatSkew == 0 {
		dp.iatSkew = defaultDeviceIATSkew
	}
	return dp, nil
}

func (h *Hook) isDeviceProvider(name string) bool { return h.ps().isDeviceProvider(name) }

func (ps *providerSet) isDeviceProvider(name string) bool { return ps.deviceByName[name] != nil }

// verifyDevice checks a token without iss for the device clientID names. provider, when set, must be the
// selected provider.
func (ps *providerSet) verifyDevice(tok *jwt.Token, signingString, provider, clientID string, t *trace) (*Identity, error) {
	if clientID == "" {
		return nil, refuse(ReasonUnknownDevice, "a token without iss is a device token, accepted only at CONNECT, where the client id names the device")
	}
	name := parseDeviceClientID(clientID)
	dp, err := ps.selectDeviceProvider(name, tok)
	if err != nil {
		return nil, err
	}
	if provider != "" && dp.name != provider {
		return nil, refuse(ReasonIssuerMismatch, "device token of provider %q does not match provider %q", dp.name, provider)
	}
	if t != nil {
		why := "it is the only devices provider"
		if name.path {
			why = fmt.Sprintf("the client id names its project %q", name.project)
		} else if len(ps.devices) > 1 {
			why = "the token's aud is its project"
		}
		t.selected(dp.name, "no iss, so a device token, for provider %q (type devices): %s", dp.name, why)
	}
	id, err := dp.verify(tok, signingString, name, t)
	if err != nil {
		if e := (*Error)(nil); errors.As(err, &e) && e.Provider == "" {
			e.Provider = dp.name
		}
		return nil, err
	}
	return id, nil
}

func (ps *providerSet) selectDeviceProvider(name deviceName, tok *jwt.Token) (*deviceProvider, error) {
	if name.path {
		if dp := ps.devicesByProject[name.project]; dp != nil {
			return dp, nil
		}
		e := refuse(ReasonProjectMismatch, "client id names project %q, which no devices provider serves", clip(name.project))
		if len(ps.devices) == 1 {
			e.Provider = ps.devices[0].name
		}
		return nil, e
	}
	if len(ps.devices) == 1 {
		return ps.devices[0], nil
	}
	aud, _ := tok.Claims.(jwt.MapClaims)["aud"].(string)
	if dp := ps.devicesByProject[aud]; dp != nil {
		return dp, nil
	}
	return nil, refuse(ReasonInvalidAudience, "device token aud %q is not the project of any devices provider", clip(aud))
}

// verify applies the checks in the order documented above. signingString is header.payload.
func (dp *deviceProvider) verify(tok *jwt.Token, signingString string, name deviceName, t *trace) (*Identity, error) {
	alg := tok.Method.Alg()
	if !slices.Contains(dp.algorithms, alg) {
		return nil, refuse(ReasonAlgNotAllowed, "algorithm %q is not allowed for devices provider %q (allowed: %s)", clip(alg), dp.name, strings.Join(dp.algorithms, ", "))
	}
	if t != nil {
		t.pass("algorithm", "%s is allowed (%s)", alg, strings.Join(dp.algorithms, ", "))
	}
	if !validDeviceID(name.id) {
		return nil, refuse(ReasonUnknownDevice, "client id %q is neither a device id nor projects/{project}/locations/{region}/registries/{registry}/devices/{device-id}", clip(name.id))
	}
	d := dp.registry.lookup(name.id)
	if d == nil {
		return nil, refuse(ReasonUnknownDevice, "no device %q is registered", name.id)
	}
	if d.blocked {
		return nil, refuse(ReasonDeviceBlocked, "device %q is blocked", d.id)
	}
	now := dp.now()
	if t != nil {
		t.pass("device", "device %q is registered and not blocked (keys: %d)", d.id, len(d.keys))
	}
	if err := dp.checkSignature(tok, signingString, d, now); err != nil {
		return nil, err
	}
	if t != nil {
		t.pass("signature", "verifies with an unexpired key of device %q", d.id)
	}

	claims := tok.Claims.(jwt.MapClaims)
	aud, err := claims.GetAudience()
	switch {
	case err != nil:
		return nil, refuseWrap(ReasonMalformed, err, "claim \"aud\" is not a string")
	case len(aud) == 0:
		return nil, missingClaim("aud")
	case len(aud) != 1 || aud[0] != dp.project:
		return nil, refuse(ReasonInvalidAudience, "token aud %q is not the project %q", clip(strings.Join(aud, ",")), dp.project)
	}
	iat, err := claims.GetIssuedAt()
	switch {
	case err != nil:
		return nil, refuseWrap(ReasonMalformed, err, "claim \"iat\" is not a number")
	case iat == nil:
		return nil, missingClaim("iat")
	}
	if skew := now.Sub(iat.Time); skew > dp.iatSkew || -skew > dp.iatSkew {
		when := "in the past"
		if skew < 0 {
			when, skew = "in the future", -skew
		}
		return nil, refuse(ReasonIATSkew, "iat is %s %s, more than the %s allowed (iat_skew)", skew.Round(time.Second), when, dp.iatSkew)
	}
	exp, err := claims.GetExpirationTime()
	switch {
	case err != nil:
		return nil, refuseWrap(ReasonMalformed, err, "claim \"exp\" is not a number")
	case exp == nil:
		return nil, missingClaim("exp")
	}
	if life := exp.Sub(iat.Time); life > dp.maxLifetime+dp.leeway {
		return nil, refuse(ReasonLifetimeTooLong, "exp - iat is %s, more than the %s allowed (max_lifetime)", life, dp.maxLifetime)
	}
	if !now.Before(exp.Add(dp.leeway)) {
		return nil, refuse(ReasonTokenExpired, "token expired")
	}
	nbf, err := claims.GetNotBefore()
	switch {
	case err != nil:
		return nil, refuseWrap(ReasonMalformed, err, "claim \"nbf\" is not a number")
	case nbf != nil && now.Add(dp.leeway).Before(nbf.Time):
		return nil, refuse(ReasonTokenNotYetValid, "token is not valid yet (nbf in the future)")
	}

	if t != nil {
		dp.trace(t, name, iat.Time, exp.Time, now)
	}
	id := dp.identity(name, claims, iat.Time, exp.Time)
	id.facts = credentialFacts{alg: alg, aud: dp.project}
	return id, nil
}

// trace records, for Explain, the checks after the signature and where a device identity comes from.
func (dp *deviceProvider) trace(t *trace, name deviceName, iat, exp, now time.Time) {
	t.pass("audience", "aud is the project %q", dp.project)
	t.pass("iat", "iat %s, within iat_skew %s", auditWhen(iat, now), dp.iatSkew)
	t.pass("lifetime", "exp - iat is %s, at most max_lifetime %s", exp.Sub(iat), dp.maxLifetime)
	t.pass("exp", "%s, leeway %s", auditWhen(exp, now), dp.leeway)
	t.usernameFrom = "the device id from the client id, percent-encoded if needed"
	t.clientIDRule = "must name a registered device: the bare device id or projects/{project}/locations/{region}/registries/{registry}/devices/{device-id}"
	t.attrs = append(t.attrs, ExplainedAttribute{Name: "device_id", Value: name.id, Set: true, Source: "client id"})
	if name.registry != "" {
		t.attrs = append(t.attrs, ExplainedAttribute{Name: "region", Value: name.region, Set: true, Source: "client id path"},
			ExplainedAttribute{Name: "registry", Value: name.registry, Set: true, Source: "client id path"})
	}
}

// identity is the Identity of a verified device token: the device is named by the client id, never the token.
func (dp *deviceProvider) identity(name deviceName, claims jwt.MapClaims, iat, exp time.Time) *Identity {
	id := &Identity{
		Provider:   dp.name,
		Subject:    name.id,
		Username:   escapeUsername(name.id),
		IssuedAt:   iat,
		ExpiresAt:  exp,
		Attributes: map[string]string{"device_id": name.id},
	}
	id.TokenID, _ = claims["jti"].(string)
	if name.registry != "" {
		id.Attributes["registry"] = name.registry
	}
	if name.region != "" {
		id.Attributes["region"] = name.region
	}
	return id
}

// checkSignature verifies with each unexpired key of the device. Expired keys are tried only after that
// fails, to tell the operator that the device signs with a key that expired rather than with a wrong one.
func (dp *deviceProvider) checkSignature(tok *jwt.Token, signingString string, d *device, now time.Time) error {
	live := 0
	for _, k := range d.keys {
		if k.expiredAt(now) {
			continue
		}
		live++
		if tok.Method.Verify(signingString, tok.Signature, k.pub) == nil {
			return nil
		}
	}
	if live == 0 {
		return refuse(ReasonKeyExpired, "every key of device %q has expired", d.id)
	}
	for _, k := range d.keys {
		if k.expiredAt(now) && tok.Method.Verify(signingString, tok.Signature, k.pub) == nil {
			return refuse(ReasonKeyExpired, "token is signed with a key of device %q that expired at %s", d.id, k.expires.UTC().Format(time.RFC3339))
		}
	}
	return refuse(ReasonInvalidSignature, "signature does not verify with any of the %d unexpired keys of device %q", live, d.id)
}

// status reports the registry for /readyz and `idmq check`: ready once loaded (New fails otherwise); Keys
// counts the keys of every registered device; LastError is the last registry_dir scan's.
func (dp *deviceProvider) status() ProviderStatus {
	keys, at, err := dp.registry.status()
	st := ProviderStatus{Name: dp.name, Type: TypeDevices, Ready: true, Keys: keys, LastFetch: at}
	if err != nil {
		st.LastError = err.Error()
	}
	return st
}

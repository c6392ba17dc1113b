package authhook

import (
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// keySource gives the key that must have signed a token.
type keySource interface {
	lookup(tok *jwt.Token) (key any, h *keyHandle, err error)
}

// staticKey is a key that never changes while running: the local issuer's public key or an HMAC secret.
type staticKey struct {
	key any
	kid string // "" = tokens may carry any kid
}

func (s staticKey) lookup(tok *jwt.Token) (any, *keyHandle, error) {
	if kid, _ := tok.Header["kid"].(string); s.kid != "" && kid != "" && kid != s.kid {
		return nil, nil, refuse(ReasonUnknownKID, "no key with kid %q", clip(kid))
	}
	return s.key, staticHandle, nil
}

// verifier checks tokens of one issuer of one provider. It is built once at New; verify is its one method.
// It does not pick the issuer (the caller selected it by iss) and does not bind a client id.
type verifier struct {
	spec      *providerSpec
	issuer    string
	keys      keySource
	validator *jwt.Validator
	leeway    time.Duration // what validator applies; kept for Explain
	now       func() time.Time
}

func newVerifier(spec *providerSpec, issuer string, keys keySource, leeway time.Duration, now func() time.Time) *verifier {
	opts := []jwt.ParserOption{jwt.WithLeeway(leeway), jwt.WithTimeFunc(now), jwt.WithExpirationRequired(), jwt.WithIssuedAt()}
	if len(spec.audiences) > 0 {
		opts = append(opts, jwt.WithAudience(spec.audiences...))
	}
	return &verifier{spec: spec, issuer: issuer, keys: keys, validator: jwt.NewValidator(opts...), leeway: leeway, now: now}
}

// verify checks a parsed (not yet verified) token whose iss is v.issuer: algorithm, key, signature, then
// time and audience claims, azp, and the claims the mapping requires. signingString is header.payload.
func (v *verifier) verify(tok *jwt.Token, signingString string, t *trace) (*Identity, *keyHandle, error) {
	id, h, err := v.check(tok, signingString, t)
	if err != nil {
		var e *Error
		if errors.As(err, &e) && e.Provider == "" {
			e.Provider = v.spec.name
		}
		return nil, nil, err
	}
	return id, h, nil
}

func (v *verifier) check(tok *jwt.Token, signingString string, t *trace) (*Identity, *keyHandle, error) {
	alg := tok.Method.Alg()
	if !slices.Contains(v.spec.algorithms, alg) {
		return nil, nil, refuse(ReasonAlgNotAllowed, "algorithm %q is not allowed for provider %q", clip(alg), v.spec.name)
	}
	if t != nil {
		t.pass("algorithm", "%s is allowed (%s)", alg, strings.Join(v.spec.algorithms, ", "))
	}
	key, h, err := v.keys.lookup(tok)
	if err != nil {
		return nil, nil, err
	}
	if t != nil {
		t.pass("key", "kid %q selects a key of issuer %q", clip(headerString(tok, "kid")), v.issuer)
	}
	if set, ok := key.(jwt.VerificationKeySet); ok {
		err = jwt.ErrTokenSignatureInvalid
		for _, k := range set.Keys {
			if err = tok.Method.Verify(signingString, tok.Signature, k); err == nil {
				break
			}
		}
	} else {
		err = tok.Method.Verify(signingString, tok.Signature, key)
	}
	if err != nil {
		return nil, nil, refuseWrap(ReasonInvalidSignature, err, "signature does not verify")
	}
	claims := tok.Claims.(jwt.MapClaims)
	if t != nil {
		t.pass("signature", "verifies (%s)", alg)
	}
	if err := v.validator.Validate(claims); err != nil {
		return nil, nil, v.claimsError(claims, err)
	}
	if t != nil {
		v.traceTimes(t, claims)
	}
	if len(v.spec.azp) > 0 {
		azp, _ := claims["azp"].(string)
		if !slices.Contains(v.spec.azp, azp) {
			return nil, nil, refuse(ReasonInvalidAZP, "authorized party (azp) %q is not allowed", clip(azp))
		}
		if t != nil {
			t.pass("azp", "%q is an authorized party", azp)
		}
	}
	var id *Identity
	if v.spec.typ == TypeLocal {
		id, err = mapLocalIdentity(v.spec.name, claims, t)
		if err == nil && alg == jwt.SigningMethodHS256.Alg() && id.Origin == "" {
			// The exchange key signs only exchanged credentials, which always name their origin.
			return nil, nil, refuse(ReasonMalformed, "an HS256 local credential must be an exchanged one")
		}
	} else {
		id, err = mapIdentityTraced(v.spec, claims, t)
	}
	if err != nil {
		return nil, nil, err
	}
	azp, _ := claims["azp"].(string)
	id.facts = credentialFacts{issuer: v.issuer, alg: alg, aud: claims["aud"], azp: azp}
	return id, h, nil
}

// traceTimes records what jwt's validator accepted: the time claims and the audience.
func (v *verifier) traceTimes(t *trace, claims jwt.MapClaims) {
	now := v.now()
	exp, _ := claims.GetExpirationTime()
	t.pass("exp", "%s, leeway %s", auditWhen(exp.Time, now), v.leeway)
	var parts []string
	if iat, _ := claims.GetIssuedAt(); iat != nil {
		parts = append(parts, "iat "+auditWhen(iat.Time, now))
	}
	if nbf, _ := claims.GetNotBefore(); nbf != nil {
		parts = append(parts, "nbf "+auditWhen(nbf.Time, now))
	}
	if len(parts) == 0 {
		parts = append(parts, "no iat or nbf")
	}
	t.pass("nbf/iat", "%s: not in the future (leeway %s)", strings.Join(parts, ", "), v.leeway)
	aud, _ := claims.GetAudience()
	if len(v.spec.audiences) == 0 {
		t.pass("audience", "not checked: the provider lists no audiences (aud %q)", []string(aud))
	} else {
		t.pass("audience", "aud %q includes one of %q", []string(aud), v.spec.audiences)
	}
}

// claimsError turns jwt's joined validation errors into one reason, the most useful one first.
func (v *verifier) claimsError(claims jwt.MapClaims, err error) error {
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return refuse(ReasonTokenExpired, "token expired")
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return refuse(ReasonTokenNotYetValid, "token is not valid yet (nbf or iat in the future)")
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		if _, ok := claims["exp"]; !ok {
			return missingClaim("exp")
		}
		return missingClaim("aud")
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return refuse(ReasonInvalidAudience, "token audience does not include one of %q", v.spec.audiences)
	}
	return refuseWrap(ReasonMalformed, err, "token claims are invalid")
}

package authhook

import (
	"crypto"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

// Claims of local credentials beyond the registered ones. Mint writes them, the local verifier reads them.
const (
	localAttributesClaim = "attrs"  // object of string attributes -> Identity.Attributes
	localTopicsClaim     = "topics" // {"publish": [...], "subscribe": [...], "all": [...]} -> Identity.Grants
	// localOriginClaim marks a credential minted by the token exchange: the provider that verified the IdP
	// token -> Identity.Origin. Its presence binds the credential to its username exactly (no placeholder).
	localOriginClaim = "origin"
	// localListsClaim carries list attributes (see Identity.Lists) of an exchanged credential.
	localListsClaim = "attr_lists"
)

// signingKeyFileName is the generated key of the local provider, inside the data directory.
const signingKeyFileName = "idmq-signing-key.pem"

// exchangeKeyInfo labels the HMAC key of exchanged credentials, derived from the local signing key. A new
// label (v2) would invalidate every outstanding exchanged credential at once.
const exchangeKeyInfo = "idmq exchanged MQTT credentials v1"

// LocalIssuer is idmq's own issuer (provider type `local`). Its tokens have
//
//	iss: the provider's `issuer` (default "idmq"), aud: its first audience (default "idmq"),
//	sub: the MQTT username verbatim (so it must already be topic-safe), iat, exp, jti,
//	attrs: {name: value}, topics: {publish, subscribe, all}.
//
// They are verified locally, with no network call, by any node holding the same key.
//
// Credentials from the token exchange (MintCredential) are HS256, keyed with an HMAC key derived (HKDF-SHA256)
// from the signing key: every node holding the signing key derives the same key, so they stay stateless and
// verifiable anywhere in the cluster, while minting and checking them costs about a microsecond instead of a
// signature. They are meant for idmq alone: the derived key is never published, so third parties cannot
// verify them through the JWKS (tokens from Mint, which they can, stay asymmetric).
type LocalIssuer struct {
	issuer         string
	audience       string
	signer         crypto.Signer
	method         jwt.SigningMethod
	kid            string
	jwksJSON       []byte
	publicKey      any
	exchangeKey    []byte // HMAC key of exchanged credentials
	exchangeKID    string
	exchangeHeader string // base64url JOSE header of exchanged credentials
	now            func() time.Time
}

// localClaims is what Mint and MintCredential sign. A struct encodes several times faster than a map, which
// matters on the token exchange's path. Only signing uses it: verification reads jwt.MapClaims.
type localClaims struct {
	Issuer     string              `json:"iss"`
	Audience   string              `json:"aud"`
	Subject    string              `json:"sub"`
	IssuedAt   int64               `json:"iat"`
	Expires    int64               `json:"exp"`
	ID         string              `json:"jti"`
	Attributes map[string]string   `json:"attrs,omitempty"`
	Lists      map[string][]string `json:"attr_lists,omitempty"`
	Topics     map[string][]string `json:"topics,omitempty"`
	Origin     string              `json:"origin,omitempty"`
}

// jwt.Claims, which jwt.NewWithClaims requires; never called when signing.
func (c *localClaims) GetExpirationTime() (*jwt.NumericDate, error) {
	return jwt.NewNumericDate(time.Unix(c.Expires, 0)), nil
}
func (c *localClaims) GetIssuedAt() (*jwt.NumericDate, error) {
	return jwt.NewNumericDate(time.Unix(c.IssuedAt, 0)), nil
}
func (c *localClaims) GetNotBefore() (*jwt.NumericDate, error) { return nil, nil }
func (c *localClaims) GetIssuer() (string, error)              { return c.Issuer, nil }
func (c *localClaims) GetSubject() (string, error)             { return c.Subject, nil }
func (c *localClaims) GetAudience() (jwt.ClaimStrings, error) {
	return jwt.ClaimStrings{c.Audience}, nil
}

// localKeys is the local provider's key source: the public key for Mint's tokens, the derived HMAC key for
// exchanged credentials. HS256 is answered only with the derived secret, never with the public key, so the
// RS256/ES256 -> HS256 confusion attack has nothing to sign with.
type localKeys struct {
	li *LocalIssuer
}

func (k localKeys) lookup(tok *jwt.Token) (any, *keyHandle, error) {
	kid, _ := tok.Header["kid"].(string)
	if tok.Method.Alg() == jwt.SigningMethodHS256.Alg() {
		if kid != k.li.exchangeKID {
			return nil, nil, refuse(ReasonUnknownKID, "no exchange key with kid %q", clip(kid))
		}
		return k.li.exchangeKey, staticHandle, nil
	}
	return staticKey{key: k.li.publicKey, kid: k.li.kid}.lookup(tok)
}

func newLocalIssuer(spec *providerSpec, signer crypto.Signer, now func() time.Time) (*LocalIssuer, error) {
	method, err := signingMethodFor(signer)
	if err != nil {
		return nil, err
	}
	pub := signer.Public()
	kid, err := thumbprint(pub)
	if err != nil {
		return nil, err
	}
	jwk, err := jwkset.NewJWKFromKey(pub, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{
		ALG: jwkset.ALG(method.Alg()), KID: kid, USE: jwkset.UseSig,
	}})
	if err != nil {
		return nil, fmt.Errorf("authhook: local provider key: %w", err)
	}
	set, err := json.Marshal(jwkset.JWKSMarshal{Keys: []jwkset.JWKMarshal{jwk.Marshal()}})
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(signer)
	if err != nil {
		return nil, fmt.Errorf("authhook: local provider key: %w", err)
	}
	exchangeKey, err := hkdf.Key(sha256.New, der, nil, exchangeKeyInfo, 32)
	if err != nil {
		return nil, fmt.Errorf("authhook: deriving the exchange key: %w", err)
	}
	spec.algorithms = []string{method.Alg(), jwt.SigningMethodHS256.Alg()}
	li := &LocalIssuer{
		issuer:      spec.issuers[0].issuer,
		audience:    spec.audiences[0],
		signer:      signer,
		method:      method,
		kid:         kid,
		jwksJSON:    set,
		publicKey:   pub,
		exchangeKey: exchangeKey,
		exchangeKID: "xc-" + kid[:min(16, len(kid))],
		now:         now,
	}
	header, err := json.Marshal(map[string]string{"alg": "HS256", "kid": li.exchangeKID, "typ": "JWT"})
	if err != nil {
		return nil, err
	}
	li.exchangeHeader = base64.RawURLEncoding.EncodeToString(header)
	return li, nil
}

// Issuer is the iss of minted tokens.
func (li *LocalIssuer) Issuer() string { return li.issuer }

// Mint signs a credential for sub (the MQTT username, which must already be topic-safe: it is used verbatim).
// It may be presented with a placeholder username (`idmq token` credentials).
func (li *LocalIssuer) Mint(sub string, ttl time.Duration, attrs map[string]string, grants TopicGrants) (string, error) {
	token, _, err := li.mint(sub, ttl, attrs, grants, "")
	return token, err
}

// MintCredential signs the credential the token exchange hands out for a verified identity: its username,
// attributes, grants and provider of origin, valid for ttl. It is verified offline, by any node holding
// idmq's key, and accepted at CONNECT only with exactly its username. expiresAt is the credential's exp.
func (li *LocalIssuer) MintCredential(id *Identity, ttl time.Duration) (token string, expiresAt time.Time, err error) {
	if id == nil || id.Username == "" {
		return "", time.Time{}, errors.New("authhook: mint credential: the identity has no username (anonymous identities cannot be exchanged)")
	}
	origin := id.Provider
	if id.Origin != "" { // re-exchanging an exchanged credential keeps the first origin
		origin = id.Origin
	}
	if origin == "" {
		return "", time.Time{}, errors.New("authhook: mint credential: the identity has no provider")
	}
	return li.mintWith(id.Username, ttl, id.Attributes, id.Lists, id.Grants, origin)
}

func (li *LocalIssuer) mint(sub string, ttl time.Duration, attrs map[string]string, grants TopicGrants, origin string) (string, time.Time, error) {
	return li.mintWith(sub, ttl, attrs, nil, grants, origin)
}

func (li *LocalIssuer) mintWith(sub string, ttl time.Duration, attrs map[string]string, lists map[string][]string, grants TopicGrants, origin string) (string, time.Time, error) {
	fail := func(err error) (string, time.Time, error) { return "", time.Time{}, err }
	if sub == "" {
		return fail(errors.New("authhook: mint: sub must not be empty"))
	}
	if !safeUsername(sub) {
		return fail(fmt.Errorf("authhook: mint: sub %q may not contain '+', '#', '/', control characters or start with '$'", sub))
	}
	if ttl < time.Second {
		return fail(fmt.Errorf("authhook: mint: ttl must be at least 1s (exp has one-second precision), got %s", ttl))
	}
	for k := range attrs {
		if !attributeName.MatchString(k) {
			return fail(fmt.Errorf("authhook: mint: attribute name %q must be a letter or '_' followed by letters, digits or '_'", k))
		}
	}
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return fail(err)
	}
	now := li.now()
	exp := now.Add(ttl).Unix()
	claims := &localClaims{
		Issuer: li.issuer, Audience: li.audience, Subject: sub,
		IssuedAt: now.Unix(), Expires: exp, ID: base64.RawURLEncoding.EncodeToString(jti),
		Attributes: attrs, Lists: lists, Origin: origin,
	}
	if !grants.empty() {
		claims.Topics = grantsClaim(grants)
	}
	if origin != "" {
		s, err := li.signExchanged(claims)
		if err != nil {
			return fail(err)
		}
		return s, time.Unix(exp, 0), nil
	}
	tok := jwt.NewWithClaims(li.method, claims)
	tok.Header["kid"] = li.kid
	s, err := tok.SignedString(li.signer)
	if err != nil {
		return fail(err)
	}
	return s, time.Unix(exp, 0), nil
}

// signExchanged writes an HS256 JWS with the header encoded once at start: on the token exchange's path
// the generic signer's map-header encoding costs as much as the HMAC itself.
func (li *LocalIssuer) signExchanged(claims *localClaims) (string, error) {
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	enc := base64.RawURLEncoding
	buf := make([]byte, 0, len(li.exchangeHeader)+1+enc.EncodedLen(len(payload))+1+enc.EncodedLen(sha256.Size))
	buf = append(buf, li.exchangeHeader...)
	buf = append(buf, '.')
	buf = enc.AppendEncode(buf, payload)
	mac := hmac.New(sha256.New, li.exchangeKey)
	mac.Write(buf)
	buf = append(buf, '.')
	buf = enc.AppendEncode(buf, mac.Sum(nil))
	return string(buf), nil
}

// JWKSHandler serves the public key set (GET /.well-known/jwks.json).
func (li *LocalIssuer) JWKSHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "public, max-age=300")
		_, _ = w.Write(li.jwksJSON)
	})
}

// DiscoveryHandler serves a minimal OpenID discovery document (GET /.well-known/openid-configuration). When
// the issuer is an http(s) URL the key set is announced under it; otherwise under the requested host.
func (li *LocalIssuer) DiscoveryHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		jwksURI := ""
		if u, err := url.Parse(li.issuer); err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != "" {
			jwksURI = strings.TrimSuffix(li.issuer, "/") + "/.well-known/jwks.json"
		} else {
			scheme := "http"
			if r.TLS != nil {
				scheme = "https"
			}
			jwksURI = scheme + "://" + r.Host + "/.well-known/jwks.json"
		}
		doc := map[string]any{
			"issuer":                                li.issuer,
			"jwks_uri":                              jwksURI,
			"id_token_signing_alg_values_supported": []string{li.method.Alg()},
			"response_types_supported":              []string{"id_token"},
			"subject_types_supported":               []string{"public"},
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "public, max-age=300")
		_ = json.NewEncoder(w).Encode(doc)
	})
}

// mapLocalIdentity reads a local credential: sub is the username as it is (Mint refused unsafe ones).
func mapLocalIdentity(provider string, claims jwt.MapClaims, t *trace) (*Identity, error) {
	id := &Identity{Provider: provider}
	id.Subject, _ = claims["sub"].(string)
	if id.Subject == "" {
		return nil, missingClaim("sub")
	}
	if !safeUsername(id.Subject) {
		return nil, &Error{Reason: ReasonMalformed, Claim: "sub", Message: "sub is not a topic-safe username"}
	}
	id.Username = id.Subject
	id.TokenID, _ = claims["jti"].(string)
	if exp, err := claims.GetExpirationTime(); err == nil && exp != nil {
		id.ExpiresAt = exp.Time
	}
	if iat, err := claims.GetIssuedAt(); err == nil && iat != nil {
		id.IssuedAt = iat.Time
	}
	if raw, ok := claims[localAttributesClaim]; ok {
		m, ok := raw.(map[string]any)
		if !ok {
			return nil, &Error{Reason: ReasonMalformed, Claim: localAttributesClaim, Message: "claim \"attrs\" must be an object of strings"}
		}
		id.Attributes = make(map[string]string, len(m))
		for k, v := range m {
			s, ok := v.(string)
			if !ok {
				return nil, &Error{Reason: ReasonMalformed, Claim: localAttributesClaim, Message: "claim \"attrs\" must be an object of strings"}
			}
			id.Attributes[k] = s
		}
	}
	if raw, ok := claims[localListsClaim]; ok {
		lists, ok := stringLists(raw)
		if !ok {
			return nil, &Error{Reason: ReasonMalformed, Claim: localListsClaim, Message: "claim \"attr_lists\" must be an object of string lists"}
		}
		id.Lists = lists
	}
	if raw, ok := claims[localOriginClaim]; ok {
		if id.Origin, _ = raw.(string); id.Origin == "" {
			return nil, &Error{Reason: ReasonMalformed, Claim: localOriginClaim, Message: "claim \"origin\" must be a provider name"}
		}
	}
	if raw, ok := claims[localTopicsClaim]; ok {
		g, err := parseGrants(raw)
		if err != nil {
			return nil, &Error{Reason: ReasonMalformed, Claim: localTopicsClaim, Message: "claim \"topics\" " + err.Error()}
		}
		id.Grants = g
	}
	if t != nil {
		traceLocal(t, id)
	}
	return id, nil
}

func stringLists(raw any) (map[string][]string, bool) {
	m, ok := raw.(map[string]any)
	if !ok {
		return nil, false
	}
	out := make(map[string][]string, len(m))
	for k, v := range m {
		arr, ok := v.([]any)
		if !ok {
			return nil, false
		}
		for _, x := range arr {
			s, ok := x.(string)
			if !ok {
				return nil, false
			}
			out[k] = append(out[k], s)
		}
	}
	return out, true
}

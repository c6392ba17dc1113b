package authhook

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TestExchangedCredentialsUseTheDerivedKeyOnly: exchanged credentials are HS256 under a key derived from the
// signing key; no other HS256 token passes, the public key is never an HMAC secret, and the JWKS never shows
// the derived key.
func TestExchangedCredentialsUseTheDerivedKeyOnly(t *testing.T) {
	dir := t.TempDir()
	h := newLocalHook(t, dir, time.Now)
	li := h.LocalIssuer()
	cred, _, err := li.MintCredential(&Identity{Username: "alice", Provider: "corp"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	parsed, _, err := jwt.NewParser().ParseUnverified(cred, jwt.MapClaims{})
	if err != nil || parsed.Method.Alg() != "HS256" || parsed.Header["kid"] != li.exchangeKID {
		t.Fatalf("exchanged credential header %v (%v), want HS256 with the exchange kid", parsed.Header, err)
	}
	if id, err := h.Verify(context.Background(), cred, ""); err != nil || id.Origin != "corp" {
		t.Fatalf("exchanged credential: %+v %v", id, err)
	}

	// Another process holding the same signing key (another node) accepts it too.
	other := newLocalHook(t, dir, time.Now)
	if _, err := other.Verify(context.Background(), cred, ""); err != nil {
		t.Fatalf("a second node with the same key refused the credential: %v", err)
	}

	claims := jwt.MapClaims{"iss": li.issuer, "aud": li.audience, "sub": "mallory", "iat": time.Now().Unix(),
		"exp": time.Now().Add(time.Hour).Unix(), localOriginClaim: "corp"}
	sign := func(key []byte, kid string, c jwt.MapClaims) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, c)
		tok.Header["kid"] = kid
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	pubDER, err := x509.MarshalPKIXPublicKey(li.publicKey)
	if err != nil {
		t.Fatal(err)
	}
	noOrigin := jwt.MapClaims{}
	for k, v := range claims {
		noOrigin[k] = v
	}
	delete(noOrigin, localOriginClaim)
	tests := []struct {
		name   string
		token  string
		reason Reason
	}{
		{"HS256 with the public key as secret, signing key's kid", sign(pubDER, li.kid, claims), ReasonUnknownKID},
		{"HS256 with the public key as secret, exchange kid", sign(pubDER, li.exchangeKID, claims), ReasonInvalidSignature},
		{"HS256 with the right key but no origin", sign(li.exchangeKey, li.exchangeKID, noOrigin), ReasonMalformed},
		{"HS256 with another secret", sign([]byte(strings.Repeat("k", 32)), li.exchangeKID, claims), ReasonInvalidSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := h.Verify(context.Background(), tt.token, "")
			if ReasonOf(err) != tt.reason {
				t.Fatalf("got %v, want reason %s", err, tt.reason)
			}
		})
	}

	rec := httptest.NewRecorder()
	li.JWKSHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/.well-known/jwks.json", nil))
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &set); err != nil || len(set.Keys) != 1 || set.Keys[0]["kty"] == "oct" || set.Keys[0]["k"] != nil {
		t.Fatalf("JWKS must hold only the public signing key: %s", rec.Body.String())
	}
}

package testkit

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

func TestKeySignVerifies(t *testing.T) {
	for _, alg := range []string{"RS256", "ES256", "EdDSA"} {
		t.Run(alg, func(t *testing.T) {
			k := NewKey(t, alg, "kid-"+alg)
			tok := k.Sign(t, jwt.MapClaims{"sub": "alice"})
			parsed, err := jwt.Parse(tok, func(tok *jwt.Token) (any, error) { return k.Signer.Public(), nil },
				jwt.WithValidMethods([]string{alg}))
			if err != nil {
				t.Fatal(err)
			}
			if parsed.Header["kid"] != "kid-"+alg || parsed.Claims.(jwt.MapClaims)["sub"] != "alice" {
				t.Fatalf("header %v, claims %v", parsed.Header, parsed.Claims)
			}
			bare, err := jwt.Parse(k.SignWithoutKID(t, jwt.MapClaims{"sub": "dev"}), func(*jwt.Token) (any, error) { return k.Signer.Public(), nil },
				jwt.WithValidMethods([]string{alg}))
			if err != nil {
				t.Fatal(err)
			}
			if _, has := bare.Header["kid"]; has {
				t.Fatalf("SignWithoutKID wrote a kid: %v", bare.Header)
			}
			other := NewKey(t, alg, "kid-"+alg)
			if _, err := jwt.Parse(other.Sign(t, jwt.MapClaims{}), func(*jwt.Token) (any, error) { return k.Signer.Public(), nil }); err == nil {
				t.Fatal("a token from another key verified")
			}
		})
	}
}

func TestKeyPublicForms(t *testing.T) {
	k := NewKey(t, "ES256", "ec-1")
	block, _ := pem.Decode(k.PublicPEM(t))
	if block == nil || block.Type != "PUBLIC KEY" {
		t.Fatalf("PublicPEM: %v", block)
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !k.Signer.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(pub) {
		t.Fatal("PublicPEM holds another key")
	}
	j, err := k.JWK()
	if err != nil {
		t.Fatal(err)
	}
	if j.KID != "ec-1" || j.KTY != "EC" || j.CRV != "P-256" || j.USE != "sig" {
		t.Fatalf("JWK %+v", j)
	}
}

package testkit

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"testing"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

// Key is a signing key generated for one test, with the kid an identity provider publishes it under.
type Key struct {
	KID    string
	Method jwt.SigningMethod
	Signer crypto.Signer
}

// NewKey generates a fresh key for alg: "RS256" (2048-bit RSA), "ES256" (P-256) or "EdDSA" (Ed25519).
func NewKey(t testing.TB, alg, kid string) Key {
	t.Helper()
	k := Key{KID: kid}
	var err error
	switch alg {
	case "RS256":
		k.Method = jwt.SigningMethodRS256
		k.Signer, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ES256":
		k.Method = jwt.SigningMethodES256
		k.Signer, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "EdDSA":
		k.Method = jwt.SigningMethodEdDSA
		_, k.Signer, err = ed25519.GenerateKey(rand.Reader)
	default:
		t.Fatalf("testkit: no key type for alg %q", alg)
	}
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Sign returns a JWT of claims signed with k, its header naming k.KID (even when empty, as a careless
// issuer would).
func (k Key) Sign(t testing.TB, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(k.Method, claims)
	tok.Header["kid"] = k.KID
	s, err := tok.SignedString(k.Signer)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// SignWithoutKID returns a JWT of claims signed with k and no kid in its header, as a Cloud IoT device signs:
// the verifier knows the device's keys and tries each.
func (k Key) SignWithoutKID(t testing.TB, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(k.Method, claims).SignedString(k.Signer)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// JWK is k's public half as a JWKS entry for signatures.
func (k Key) JWK() (jwkset.JWKMarshal, error) {
	j, err := jwkset.NewJWKFromKey(k.Signer.Public(), jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: k.KID, USE: jwkset.UseSig}})
	if err != nil {
		return jwkset.JWKMarshal{}, err
	}
	return j.Marshal(), nil
}

// PublicPEM is k's public half as a PKIX "PUBLIC KEY" PEM block, as `openssl pkey -pubout` writes it.
func (k Key) PublicPEM(t testing.TB) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(k.Signer.Public())
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

package client

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// unsignedJWT is a JWT with payload as its claims and a junk signature: the client never checks one.
func unsignedJWT(payload string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"ES256","typ":"JWT"}`)) + "." + enc([]byte(payload)) + ".c2ln"
}

func TestTokenExpiry(t *testing.T) {
	for _, tc := range []struct {
		name, token string
		want        time.Time
		err         string
	}{
		{name: "integer exp", token: unsignedJWT(`{"exp":1900000000,"aud":"p"}`), want: time.Unix(1900000000, 0)},
		{name: "fractional exp", token: unsignedJWT(`{"exp":1900000000.5}`), want: time.Unix(1900000000, 5e8)},
		{name: "not a JWT", token: "opaque-access-token", err: "not a JWT"},
		{name: "payload not base64url", token: "a.b*c.d", err: "not base64url"},
		{name: "payload not JSON", token: unsignedJWT(`[1]`), err: "not a JSON object"},
		{name: "no exp", token: unsignedJWT(`{"iat":1}`), err: "no exp claim"},
		{name: "exp a string", token: unsignedJWT(`{"exp":"tomorrow"}`), err: "not a JSON object"},
		{name: "exp negative", token: unsignedJWT(`{"exp":-5}`), err: "not a plausible"},
		{name: "exp beyond any clock", token: unsignedJWT(`{"exp":1e300}`), err: "not a plausible"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tokenExpiry(tc.token)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil || !got.Equal(tc.want) {
				t.Fatalf("got %s, %v; want %s", got, err, tc.want)
			}
		})
	}
}

func TestRefreshAt(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name     string
		obtained time.Time
		life     time.Duration
		before   time.Duration
		want     time.Time
	}{
		{name: "1h token, refresh a minute before exp", obtained: t0, life: time.Hour, before: time.Minute, want: t0.Add(59 * time.Minute)},
		{name: "3s token, refresh 1s before exp", obtained: t0, life: 3 * time.Second, before: time.Second, want: t0.Add(2 * time.Second)},
		{name: "token shorter than 2x before: halfway", obtained: t0, life: 30 * time.Second, before: time.Minute, want: t0.Add(15 * time.Second)},
		{name: "already expired: now-ish, never in a loop before obtained", obtained: t0, life: -time.Second, before: time.Minute, want: t0.Add(-time.Second / 2)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := refreshAt(tc.obtained, tc.obtained.Add(tc.life), tc.before); !got.Equal(tc.want) {
				t.Fatalf("refreshAt = %s, want %s", got, tc.want)
			}
		})
	}
}

// TestDeviceToken: the source mints a new token per call that the device's public key verifies, with the
// project as aud and the lifetime asked; MintDeviceToken's refusals come through unchanged.
func TestDeviceToken(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	source := DeviceToken(key, "my-project", "", 20*time.Minute)
	first, err := source(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	claims := jwt.MapClaims{}
	if _, err := jwt.ParseWithClaims(first, claims, func(*jwt.Token) (any, error) { return key.Public(), nil },
		jwt.WithValidMethods([]string{"ES256"}), jwt.WithAudience("my-project")); err != nil {
		t.Fatalf("the device's own public key does not verify its token: %v", err)
	}
	iat, _ := claims.GetIssuedAt()
	exp, _ := claims.GetExpirationTime()
	if exp.Sub(iat.Time) != 20*time.Minute {
		t.Fatalf("lifetime %s, want 20m", exp.Sub(iat.Time))
	}
	if got, err := tokenExpiry(first); err != nil || !got.Equal(exp.Time) {
		t.Fatalf("tokenExpiry = %s, %v; want %s", got, err, exp.Time)
	}

	if _, err := DeviceToken(key, "my-project", "RS256", time.Minute)(context.Background()); err == nil || !strings.Contains(err.Error(), "sign ES256") {
		t.Fatalf("RS256 with an EC key: %v", err)
	}
	if _, err := DeviceToken(key, "my-project", "", 48*time.Hour)(context.Background()); err == nil || !strings.Contains(err.Error(), "ttl") {
		t.Fatalf("48h ttl: %v", err)
	}
}

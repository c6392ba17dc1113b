package testkit

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
)

func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode
}

// A client that knows only the issuer finds the keys through discovery and verifies what the IdP signs.
func TestIdPDiscoveryAndJWKSVerify(t *testing.T) {
	idp := NewIdP(t, NewKey(t, "ES256", "ec-1"), NewKey(t, "EdDSA", "ed-1"))
	var doc map[string]string
	if code := getJSON(t, idp.Issuer()+"/.well-known/openid-configuration", &doc); code != 200 {
		t.Fatalf("discovery: HTTP %d", code)
	}
	if doc["issuer"] != idp.Issuer() || doc["jwks_uri"] != idp.JWKSURL() {
		t.Fatalf("discovery %v", doc)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kf, err := keyfunc.NewDefaultCtx(ctx, []string{doc["jwks_uri"]})
	if err != nil {
		t.Fatal(err)
	}
	tok := idp.Sign(t, jwt.MapClaims{"iss": idp.Issuer(), "sub": "alice"})
	if _, err := jwt.Parse(tok, kf.Keyfunc); err != nil {
		t.Fatalf("IdP token does not verify against its JWKS: %v", err)
	}
	if _, err := jwt.Parse(NewKey(t, "ES256", "ec-1").Sign(t, jwt.MapClaims{}), kf.Keyfunc); err == nil {
		t.Fatal("a token from an unpublished key verified")
	}
}

func TestIdPRotateDownDelayHold(t *testing.T) {
	idp := NewIdP(t)
	var set struct{ Keys []map[string]any }
	if getJSON(t, idp.JWKSURL(), &set); len(set.Keys) != 1 || set.Keys[0]["kid"] != "k1" || set.Keys[0]["kty"] != "RSA" {
		t.Fatalf("default key set %v", set)
	}
	idp.SetKeys(NewKey(t, "RS256", "a"), NewKey(t, "ES256", "b"))
	if getJSON(t, idp.JWKSURL(), &set); len(set.Keys) != 2 || set.Keys[1]["kid"] != "b" {
		t.Fatalf("rotated key set %v", set)
	}
	idp.SetDown(true)
	if code := getJSON(t, idp.JWKSURL(), &set); code != http.StatusServiceUnavailable {
		t.Fatalf("down IdP answered %d", code)
	}
	idp.SetDown(false)
	idp.SetDelay(100 * time.Millisecond)
	start := time.Now()
	getJSON(t, idp.JWKSURL(), &set)
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Fatalf("delayed fetch answered after %s", d)
	}
	idp.SetDelay(0)
	release := idp.Hold()
	done := make(chan struct{})
	go func() { getJSON(t, idp.JWKSURL(), &set); close(done) }()
	select {
	case <-done:
		t.Fatal("a held fetch answered")
	case <-time.After(100 * time.Millisecond):
	}
	release()
	<-done
	if n := idp.Fetches(); n != 5 {
		t.Fatalf("Fetches = %d, want 5", n)
	}
}

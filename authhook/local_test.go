package authhook

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"

	"github.com/idmq/idmq/internal/testkit"
)

func newLocalHook(t *testing.T, dataDir string, now func() time.Time) *Hook {
	t.Helper()
	h, err := New(Options{Config: Config{Providers: []ProviderConfig{{Name: "local", Type: TypeLocal}}}, DataDir: dataDir, Now: now, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Stop() })
	return h
}

func TestLocalKeyGeneratedOnceAndPrivate(t *testing.T) {
	dir := t.TempDir()
	h1 := newLocalHook(t, dir, nil)
	info, err := os.Stat(filepath.Join(dir, signingKeyFileName))
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", info.Mode().Perm())
	}
	token, err := h1.LocalIssuer().Mint("alice", time.Hour, nil, TopicGrants{})
	if err != nil {
		t.Fatal(err)
	}
	// A restart (or another node with the same key) accepts the credential.
	h2 := newLocalHook(t, dir, nil)
	if _, err := h2.Verify(context.Background(), token, ""); err != nil {
		t.Fatalf("credential refused after restart: %v", err)
	}
	// Another key refuses it.
	h3 := newLocalHook(t, t.TempDir(), nil)
	if _, err := h3.Verify(context.Background(), token, ""); ReasonOf(err) != ReasonUnknownKID {
		t.Fatalf("credential of another key: %v", err)
	}
}

func TestLocalMintVerifyRoundTrip(t *testing.T) {
	clock := newFakeClock()
	h := newLocalHook(t, t.TempDir(), clock.Now)
	li := h.LocalIssuer()
	tests := []struct {
		name    string
		sub     string
		ttl     time.Duration
		attrs   map[string]string
		grants  TopicGrants
		mintErr bool
	}{
		{name: "plain", sub: "alice", ttl: time.Hour},
		{name: "attributes and grants", sub: "svc-1", ttl: time.Minute, attrs: map[string]string{"role": "admin", "org_id": "acme"},
			grants: TopicGrants{Publish: []string{"a/b"}, Subscribe: []string{"c/#"}, All: []string{"d/+"}}},
		{name: "exchanged, already escaped username", sub: "corp:a%2Fb", ttl: time.Hour},
		{name: "unsafe sub refused", sub: "a/b", ttl: time.Hour, mintErr: true},
		{name: "empty sub refused", sub: "", ttl: time.Hour, mintErr: true},
		{name: "zero ttl refused", sub: "alice", ttl: 0, mintErr: true},
		{name: "bad attribute name refused", sub: "alice", ttl: time.Hour, attrs: map[string]string{"a-b": "x"}, mintErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			token, err := li.Mint(tt.sub, tt.ttl, tt.attrs, tt.grants)
			if tt.mintErr {
				if err == nil {
					t.Fatal("Mint accepted it")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			id, err := h.Verify(context.Background(), token, "local")
			if err != nil {
				t.Fatal(err)
			}
			if id.Username != tt.sub || id.Provider != "local" || !id.ExpiresAt.Equal(clock.Now().Add(tt.ttl)) || id.TokenID == "" {
				t.Fatalf("identity = %+v", id)
			}
			if len(tt.attrs) > 0 && !reflect.DeepEqual(id.Attributes, tt.attrs) {
				t.Fatalf("attributes = %v, want %v", id.Attributes, tt.attrs)
			}
			if !reflect.DeepEqual(id.Grants, tt.grants) {
				t.Fatalf("grants = %+v, want %+v", id.Grants, tt.grants)
			}
		})
	}
	token, _ := li.Mint("alice", time.Minute, nil, TopicGrants{})
	clock.Add(time.Minute + 6*time.Second)
	if _, err := h.Verify(context.Background(), token, ""); ReasonOf(err) != ReasonTokenExpired {
		t.Fatalf("expired local credential: %v", err)
	}
}

func TestLocalSigningKeyFile(t *testing.T) {
	tests := []struct {
		name    string
		pem     string
		wantErr bool
	}{
		{name: "garbage", pem: "not a key", wantErr: true},
		{name: "public key", pem: "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "key.pem")
			if err := os.WriteFile(path, []byte(tt.pem), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := New(Options{Config: Config{SigningKeyFile: path, Providers: []ProviderConfig{{Name: "local", Type: TypeLocal}}}})
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v", err)
			}
		})
	}
	// A generated key file works as signing_key_file.
	dir := t.TempDir()
	h := newLocalHook(t, dir, nil)
	h2, err := New(Options{Config: Config{SigningKeyFile: filepath.Join(dir, signingKeyFileName), Providers: []ProviderConfig{{Name: "local", Type: TypeLocal}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer h2.Stop()
	if h2.LocalIssuer().kid != h.LocalIssuer().kid {
		t.Fatal("signing_key_file gave another key")
	}
	if _, err := New(Options{Config: Config{Providers: []ProviderConfig{{Name: "local", Type: TypeLocal}}}}); err == nil {
		t.Fatal("local provider without data dir or key file accepted")
	}
}

// Anyone can verify local credentials from the served JWKS, as another idmq node or a backend would.
func TestLocalJWKSAndDiscoveryHandlers(t *testing.T) {
	h := newLocalHook(t, t.TempDir(), nil)
	li := h.LocalIssuer()
	rec := httptest.NewRecorder()
	li.JWKSHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/.well-known/jwks.json", nil))
	body, _ := io.ReadAll(rec.Body)
	kf, err := keyfunc.NewJWKSetJSON(body)
	if err != nil {
		t.Fatal(err)
	}
	token, _ := li.Mint("alice", time.Hour, nil, TopicGrants{})
	parsed, err := jwt.Parse(token, kf.Keyfunc, jwt.WithIssuer("idmq"), jwt.WithAudience("idmq"))
	if err != nil || !parsed.Valid {
		t.Fatalf("minted token does not verify with the served JWKS: %v", err)
	}
	if strings.Contains(string(body), `"d"`) {
		t.Fatal("JWKS exposes private key material")
	}

	rec = httptest.NewRecorder()
	li.DiscoveryHandler().ServeHTTP(rec, httptest.NewRequest("GET", "http://broker.example:8080/.well-known/openid-configuration", nil))
	var doc map[string]any
	if err := json.NewDecoder(rec.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	if doc["issuer"] != "idmq" || doc["jwks_uri"] != "http://broker.example:8080/.well-known/jwks.json" {
		t.Fatalf("discovery = %v", doc)
	}
	rec = httptest.NewRecorder()
	li.JWKSHandler().ServeHTTP(rec, httptest.NewRequest("POST", "/.well-known/jwks.json", nil))
	if rec.Code != 405 {
		t.Fatalf("POST = %d", rec.Code)
	}
}

func TestMintCredential(t *testing.T) {
	clock := newFakeClock()
	key := testkit.NewKey(t, "ES256", "ec-1")
	idp := testkit.NewIdP(t, key)
	cfg := oidcConfig(idp.Issuer())
	cfg.Providers[0].TopicsClaim = "mqtt_topics"
	cfg.Providers = append(cfg.Providers, ProviderConfig{Name: "local", Type: TypeLocal})
	b := startBrokerWith(t, Options{Config: cfg, Now: clock.Now})
	waitReady(t, b.hook)
	claims := baseClaims(idp.Issuer())(clock.Now())
	claims["mqtt_topics"] = map[string]any{"publish": []any{"orders/acme"}, "subscribe": []any{"alerts/#"}}
	claims["exp"] = clock.Now().Add(time.Minute).Unix() // a short IdP token: the credential outlives it
	idpID, err := b.hook.Verify(context.Background(), key.Sign(t, claims), "")
	if err != nil {
		t.Fatal(err)
	}
	li := b.hook.LocalIssuer()
	credential, expiresAt, err := li.MintCredential(idpID, 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !expiresAt.Equal(clock.Now().Add(2 * time.Hour)) {
		t.Fatalf("expiresAt = %s, want now+2h", expiresAt)
	}
	got, err := b.hook.Verify(context.Background(), credential, "local")
	if err != nil {
		t.Fatal(err)
	}
	if got.Username != "alice" || got.Provider != "local" || got.Origin != "corp" || !got.ExpiresAt.Equal(expiresAt) ||
		!reflect.DeepEqual(got.Attributes, idpID.Attributes) || !reflect.DeepEqual(got.Grants, idpID.Grants) || got.TokenID == "" {
		t.Fatalf("credential identity = %+v, want the IdP identity %+v from local", got, idpID)
	}

	// At CONNECT the credential works with exactly its username.
	plain, _ := li.Mint("alice", time.Hour, nil, TopicGrants{})
	tests := []struct {
		name     string
		token    string
		username string
		v5, v3   byte
	}{
		{name: "exchanged, own username", token: credential, username: "alice", v5: 0x00, v3: 0x00},
		{name: "exchanged, placeholder username", token: credential, username: "jwt", v5: 0x86, v3: 0x04},
		{name: "exchanged, another username", token: credential, username: "bob", v5: 0x86, v3: 0x04},
		{name: "exchanged, no username", token: credential, username: "", v5: 0x86},
		{name: "idmq token, placeholder username", token: plain, username: "unused", v5: 0x00, v3: 0x00},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ca := connectV5(t, b.addr, passwordConnect(fmt.Sprintf("x5-%d", i), tt.username, tt.token))
			if ca.ReasonCode != tt.v5 {
				t.Fatalf("v5 CONNACK 0x%02X (%s), want 0x%02X", ca.ReasonCode, ca.Properties.ReasonString, tt.v5)
			}
			if tt.v5 != 0 && ca.Properties.ReasonString != string(ReasonUsernameMismatch) {
				t.Fatalf("reason %q", ca.Properties.ReasonString)
			}
			if tt.username == "" {
				return // 3.1.1 sends no password without a username
			}
			if code, _ := connectV3(t, b.addr, fmt.Sprintf("x3-%d", i), tt.username, tt.token); code != tt.v3 {
				t.Fatalf("v3 CONNACK 0x%02X, want 0x%02X", code, tt.v3)
			}
		})
	}
}

func TestMintCredentialRefuses(t *testing.T) {
	li := newLocalHook(t, t.TempDir(), nil).LocalIssuer()
	tests := []struct {
		name string
		id   *Identity
		ttl  time.Duration
	}{
		{name: "no identity", id: nil, ttl: time.Hour},
		{name: "anonymous", id: &Identity{Provider: ProviderAnonymous}, ttl: time.Hour},
		{name: "no provider", id: &Identity{Username: "alice"}, ttl: time.Hour},
		{name: "zero ttl", id: &Identity{Username: "alice", Provider: "corp"}, ttl: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := li.MintCredential(tt.id, tt.ttl); err == nil {
				t.Fatal("minted")
			}
		})
	}
}

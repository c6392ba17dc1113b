package testkit

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

// IdP is an OpenID provider on loopback: its discovery document at /.well-known/openid-configuration
// names the server as issuer and /jwks as jwks_uri, where it serves its keys' public halves. Tests
// rotate its keys, take it down, slow it or hold its answers, and count the key fetches.
type IdP struct {
	t   testing.TB
	srv *httptest.Server

	mu    sync.Mutex
	keys  []Key
	jwks  []byte // built when keys change, never in a handler: t must not be used there while fuzzing
	down  bool
	delay time.Duration
	gate  chan struct{}

	fetches atomic.Int64
}

// NewIdP starts an IdP publishing keys until the test ends; without keys it makes one RS256 key, kid "k1".
func NewIdP(t testing.TB, keys ...Key) *IdP {
	t.Helper()
	if len(keys) == 0 {
		keys = []Key{NewKey(t, "RS256", "k1")}
	}
	p := &IdP{t: t}
	p.SetKeys(keys...)
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"issuer": p.Issuer(), "jwks_uri": p.JWKSURL()})
	})
	mux.HandleFunc("/jwks", p.serveJWKS)
	p.srv = httptest.NewServer(mux)
	t.Cleanup(p.srv.Close)
	return p
}

func (p *IdP) serveJWKS(w http.ResponseWriter, _ *http.Request) {
	p.fetches.Add(1)
	p.mu.Lock()
	jwks, down, delay, gate := p.jwks, p.down, p.delay, p.gate
	p.mu.Unlock()
	time.Sleep(delay)
	if gate != nil {
		<-gate
	}
	if down {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(jwks)
}

// Issuer is the IdP's issuer URL (its server's root, no trailing slash).
func (p *IdP) Issuer() string { return p.srv.URL }

// JWKSURL is where the IdP serves its key set.
func (p *IdP) JWKSURL() string { return p.srv.URL + "/jwks" }

// Key is the first key the IdP publishes.
func (p *IdP) Key() Key {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.keys[0]
}

// Sign signs claims with the IdP's first key.
func (p *IdP) Sign(t testing.TB, claims jwt.MapClaims) string {
	t.Helper()
	return p.Key().Sign(t, claims)
}

// SetKeys replaces the published keys, as a key rotation does.
func (p *IdP) SetKeys(keys ...Key) {
	p.t.Helper()
	var set jwkset.JWKSMarshal
	for _, k := range keys {
		j, err := k.JWK()
		if err != nil {
			p.t.Fatal(err)
		}
		set.Keys = append(set.Keys, j)
	}
	jwks, err := json.Marshal(set)
	if err != nil {
		p.t.Fatal(err)
	}
	p.mu.Lock()
	p.keys, p.jwks = keys, jwks
	p.mu.Unlock()
}

// SetDown makes key fetches answer 503 (true) or the key set again (false).
func (p *IdP) SetDown(down bool) {
	p.mu.Lock()
	p.down = down
	p.mu.Unlock()
}

// SetDelay makes every key fetch answer d late, as a distant IdP does.
func (p *IdP) SetDelay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// Hold makes key fetches wait until release is called, so a test can gather concurrent fetchers.
func (p *IdP) Hold() (release func()) {
	gate := make(chan struct{})
	p.mu.Lock()
	p.gate = gate
	p.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			p.mu.Lock()
			p.gate = nil
			p.mu.Unlock()
			close(gate)
		})
	}
}

// Fetches counts the key-set requests served so far, answered or not.
func (p *IdP) Fetches() int64 { return p.fetches.Load() }

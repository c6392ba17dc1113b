package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"

	"github.com/idmq/idmq/internal/testkit"
)

// The local OpenID Connect provider is e2e/oidc/provider.js: npm oidc-provider (OpenID Certified), configured to
// issue RFC 9068 JWT access tokens through the client_credentials grant with a resource indicator as audience.

const (
	oidcDefaultClientID     = "idmq-e2e"
	oidcDefaultClientSecret = "idmq-e2e-secret"
	// Node start plus RSA key generation takes well under a second; the bound absorbs a loaded CI machine.
	oidcStartTimeout = 20 * time.Second
	oidcHTTPTimeout  = 10 * time.Second
	oidcMaxBody      = 1 << 20
)

// oidcOptions configures startOIDCProvider. The zero value gives one client (oidcDefaultClientID, RS256, with
// oidcDefaultClaims) and five-minute tokens.
type oidcOptions struct {
	// TokenTTL is the access token lifetime for clients without their own; whole seconds, default 5m.
	TokenTTL time.Duration
	// Clients are the confidential client_credentials clients; the first one is used by ClientCredentialsToken.
	Clients []oidcClient
}

// oidcClient is one client_credentials client. Its tokens carry sub = client_id = ID plus Claims.
type oidcClient struct {
	ID       string
	Secret   string
	Alg      string         // RS256 (default) or ES256
	TokenTTL time.Duration  // 0: oidcOptions.TokenTTL
	Claims   map[string]any // extra access token claims; cannot override iss, sub, aud, exp, iat, jti, client_id
}

// oidcDefaultClaims are the extra claims of the default client's tokens.
func oidcDefaultClaims() map[string]any {
	return map[string]any{
		"email":        "e2e-service@example.com",
		"org_id":       "org-e2e",
		"app_metadata": map[string]any{"plan": "pro"},
	}
}

// oidcProvider is a running provider process on 127.0.0.1, stopped by t.Cleanup.
type oidcProvider struct {
	issuer        string
	tokenEndpoint string
	clients       map[string]oidcClient
	firstClient   string
}

// oidcDiscovery is the part of /.well-known/openid-configuration the tests use.
type oidcDiscovery struct {
	Issuer        string `json:"issuer"`
	TokenEndpoint string `json:"token_endpoint"`
	JWKSURI       string `json:"jwks_uri"`
}

// startOIDCProvider starts e2e/oidc/provider.js on a free loopback port and waits until it serves discovery.
// Without node or e2e/oidc/node_modules it skips, or fails when CI=true.
func startOIDCProvider(t *testing.T, opts oidcOptions) *oidcProvider {
	t.Helper()
	script := oidcRequireTooling(t)

	ttl := opts.TokenTTL
	if ttl == 0 {
		ttl = 5 * time.Minute
	}
	clients := opts.Clients
	if len(clients) == 0 {
		clients = []oidcClient{{ID: oidcDefaultClientID, Secret: oidcDefaultClientSecret, Claims: oidcDefaultClaims()}}
	}
	clientsJSON, err := oidcClientsJSON(clients)
	if err != nil {
		t.Fatalf("oidc provider options: %v", err)
	}
	ttlSeconds, err := oidcWholeSeconds(ttl)
	if err != nil {
		t.Fatalf("oidc provider options: TokenTTL: %v", err)
	}

	cmd := exec.Command("node", script)
	cmd.Dir = filepath.Dir(script)
	cmd.Env = append(os.Environ(),
		"OIDC_PORT=0",
		fmt.Sprintf("OIDC_TOKEN_TTL=%d", ttlSeconds),
		"OIDC_CLIENTS="+clientsJSON,
		// The stdin pipe closes when this process dies, whatever kills it, and the provider then exits too.
		"OIDC_EXIT_ON_STDIN_EOF=1",
	)
	if _, err := cmd.StdinPipe(); err != nil {
		t.Fatalf("oidc provider stdin: %v", err)
	}
	stdout := newOIDCFirstLine()
	stderr := &testkit.LogBuffer{Max: oidcMaxBody}
	cmd.Stdout = stdout
	cmd.Stderr = stderr

	started := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start oidc provider: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("oidc provider stderr:\n%s", stderr.String())
		}
	})

	var line string
	select {
	case line = <-stdout.line:
	case err := <-exited:
		exited <- err // let Cleanup's receive return; Cleanup also prints stderr
		t.Fatalf("oidc provider exited before it was ready: %v", err)
	case <-time.After(oidcStartTimeout):
		t.Fatalf("oidc provider not ready after %s", oidcStartTimeout)
	}
	var ready struct {
		Ready  bool   `json:"ready"`
		Issuer string `json:"issuer"`
	}
	if err := json.Unmarshal([]byte(line), &ready); err != nil || !ready.Ready ||
		!strings.HasPrefix(ready.Issuer, "http://127.0.0.1:") {
		t.Fatalf("oidc provider readiness line %q: want {\"ready\":true,\"issuer\":\"http://127.0.0.1:PORT\"} (%v)", line, err)
	}

	p := &oidcProvider{issuer: ready.Issuer, clients: map[string]oidcClient{}, firstClient: clients[0].ID}
	for _, c := range clients {
		p.clients[c.ID] = c
	}
	disc := fetchOIDCDiscovery(t, p.issuer)
	p.tokenEndpoint = disc.TokenEndpoint
	t.Logf("oidc provider %s ready in %s", p.issuer, time.Since(started).Round(time.Millisecond))
	return p
}

// Issuer is the provider's issuer identifier, http://127.0.0.1:PORT (no trailing slash).
func (p *oidcProvider) Issuer() string { return p.issuer }

// ClientCredentialsToken fetches a JWT access token with aud = audience for the first configured client.
func (p *oidcProvider) ClientCredentialsToken(t *testing.T, audience string) string {
	t.Helper()
	return p.ClientCredentialsTokenFor(t, p.firstClient, audience)
}

// ClientCredentialsTokenFor fetches a JWT access token with aud = audience for the client clientID, by a real
// client_credentials POST (RFC 8707 resource indicator) to the discovered token endpoint.
func (p *oidcProvider) ClientCredentialsTokenFor(t *testing.T, clientID, audience string) string {
	t.Helper()
	c, ok := p.clients[clientID]
	if !ok {
		t.Fatalf("oidc provider has no client %q", clientID)
	}
	form := url.Values{"grant_type": {"client_credentials"}, "resource": {audience}}
	req, err := http.NewRequest(http.MethodPost, p.tokenEndpoint, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatalf("token request: %v", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	// RFC 6749 2.3.1: client_secret_basic credentials are form-encoded before base64.
	req.SetBasicAuth(url.QueryEscape(c.ID), url.QueryEscape(c.Secret))

	status, body := oidcDo(t, req)
	if status != http.StatusOK {
		t.Fatalf("token endpoint %s: HTTP %d: %s", p.tokenEndpoint, status, body)
	}
	var resp struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatalf("token endpoint response is not JSON: %v", err)
	}
	if resp.AccessToken == "" || !strings.EqualFold(resp.TokenType, "Bearer") {
		t.Fatalf("token endpoint response: want a Bearer access_token, got token_type %q and %d-byte token",
			resp.TokenType, len(resp.AccessToken))
	}
	return resp.AccessToken
}

// fetchOIDCDiscovery reads issuer/.well-known/openid-configuration, as a user's idmq config would.
func fetchOIDCDiscovery(t *testing.T, issuer string) oidcDiscovery {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, issuer+"/.well-known/openid-configuration", nil)
	if err != nil {
		t.Fatalf("discovery request: %v", err)
	}
	status, body := oidcDo(t, req)
	if status != http.StatusOK {
		t.Fatalf("discovery %s: HTTP %d: %s", req.URL, status, body)
	}
	var d oidcDiscovery
	if err := json.Unmarshal(body, &d); err != nil {
		t.Fatalf("discovery %s: %v", req.URL, err)
	}
	if d.Issuer != issuer || d.TokenEndpoint == "" || d.JWKSURI == "" {
		t.Fatalf("discovery %s: issuer %q token_endpoint %q jwks_uri %q; want issuer %q and both endpoints",
			req.URL, d.Issuer, d.TokenEndpoint, d.JWKSURI, issuer)
	}
	return d
}

func oidcDo(t *testing.T, req *http.Request) (int, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), oidcHTTPTimeout)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, oidcMaxBody))
	if err != nil {
		t.Fatalf("%s %s: read body: %v", req.Method, req.URL, err)
	}
	return resp.StatusCode, body
}

// oidcRequireTooling returns the provider script's path, or skips (fails when CI=true) if node or the npm
// packages are missing.
func oidcRequireTooling(t *testing.T) string {
	t.Helper()
	missing := func(msg string) { t.Helper(); missingTool(t, msg) }
	if _, err := exec.LookPath("node"); err != nil {
		missing("node is not on PATH: install Node.js >= 18, then run `npm ci --prefix e2e/oidc` in the repository root")
	}
	root, err := oidcRepoRoot()
	if err != nil {
		t.Fatalf("locate repository root: %v", err)
	}
	dir := filepath.Join(root, "e2e", "oidc")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "oidc-provider", "package.json")); err != nil {
		missing("e2e/oidc/node_modules is missing: run `npm ci --prefix e2e/oidc` in the repository root")
	}
	return filepath.Join(dir, "provider.js")
}

// oidcRepoRoot walks up from the working directory (the package directory under go test) to go.mod.
func oidcRepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

func oidcClientsJSON(clients []oidcClient) (string, error) {
	type clientJSON struct {
		ClientID     string         `json:"client_id"`
		ClientSecret string         `json:"client_secret"`
		Alg          string         `json:"alg,omitempty"`
		TokenTTL     int64          `json:"token_ttl,omitempty"`
		Claims       map[string]any `json:"claims,omitempty"`
	}
	out := make([]clientJSON, 0, len(clients))
	for i, c := range clients {
		if c.ID == "" || c.Secret == "" {
			return "", fmt.Errorf("Clients[%d]: ID and Secret are required", i)
		}
		var ttl int64
		if c.TokenTTL != 0 {
			var err error
			if ttl, err = oidcWholeSeconds(c.TokenTTL); err != nil {
				return "", fmt.Errorf("Clients[%d].TokenTTL: %w", i, err)
			}
		}
		out = append(out, clientJSON{ClientID: c.ID, ClientSecret: c.Secret, Alg: c.Alg, TokenTTL: ttl, Claims: c.Claims})
	}
	b, err := json.Marshal(out)
	return string(b), err
}

func oidcWholeSeconds(d time.Duration) (int64, error) {
	if d < time.Second || d%time.Second != 0 {
		return 0, fmt.Errorf("%s: token lifetimes are whole seconds, at least 1s", d)
	}
	return int64(d / time.Second), nil
}

// oidcFirstLine hands the first complete stdout line (the readiness line) to line and discards the rest.
type oidcFirstLine struct {
	mu   sync.Mutex
	buf  []byte
	done bool
	line chan string
}

func newOIDCFirstLine() *oidcFirstLine { return &oidcFirstLine{line: make(chan string, 1)} }

func (w *oidcFirstLine) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return len(p), nil
	}
	w.buf = append(w.buf, p...)
	if i := bytes.IndexByte(w.buf, '\n'); i >= 0 {
		w.done = true
		w.line <- string(w.buf[:i])
		w.buf = nil
	} else if len(w.buf) > oidcMaxBody {
		return 0, errors.New("oidc provider stdout: no newline in the first MiB")
	}
	return len(p), nil
}

func TestOIDCProviderIssuesVerifiableJWT(t *testing.T) {
	sensorClaims := map[string]any{"email": "Sensor-7@Example.com", "org_id": "org-b", "topics": []any{"sensors/7/#"}}
	p := startOIDCProvider(t, oidcOptions{
		TokenTTL: 2 * time.Minute,
		Clients: []oidcClient{
			{ID: oidcDefaultClientID, Secret: oidcDefaultClientSecret, Claims: oidcDefaultClaims()},
			{ID: "sensor-7", Secret: "sensor-7-secret", Alg: "ES256", TokenTTL: 45 * time.Second, Claims: sensorClaims},
		},
	})

	// Keys come the way idmq's oidc provider type finds them: issuer -> discovery -> jwks_uri.
	disc := fetchOIDCDiscovery(t, p.Issuer())
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	keys, err := keyfunc.NewDefaultCtx(ctx, []string{disc.JWKSURI})
	if err != nil {
		t.Fatalf("keyfunc from %s: %v", disc.JWKSURI, err)
	}

	tests := []struct {
		name       string
		clientID   string
		audience   string
		wantAlg    string
		wantTTL    time.Duration
		wantClaims map[string]any
	}{
		{"RS256 default client, mqtt audience", oidcDefaultClientID, "mqtt://idmq", "RS256", 2 * time.Minute, oidcDefaultClaims()},
		{"ES256 client with own lifetime, https audience", "sensor-7", "https://mqtt.example", "ES256", 45 * time.Second, sensorClaims},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := p.ClientCredentialsTokenFor(t, tt.clientID, tt.audience)

			claims := jwt.MapClaims{}
			tok, err := jwt.ParseWithClaims(raw, claims, keys.Keyfunc,
				jwt.WithValidMethods([]string{tt.wantAlg}),
				jwt.WithIssuer(p.Issuer()),
				jwt.WithAudience(tt.audience),
				jwt.WithExpirationRequired(),
				jwt.WithIssuedAt(),
			)
			if err != nil {
				t.Fatalf("verify token: %v", err)
			}
			if got := tok.Header["typ"]; got != "at+jwt" {
				t.Errorf("typ header = %v, want at+jwt (RFC 9068)", got)
			}
			if got := tok.Header["kid"]; got == nil || got == "" {
				t.Errorf("kid header missing; idmq selects keys by kid")
			}
			exp, _ := claims.GetExpirationTime()
			iat, _ := claims.GetIssuedAt()
			if exp == nil || iat == nil || exp.Sub(iat.Time) != tt.wantTTL {
				t.Errorf("exp - iat = %v, want %v", oidcClaimsSpan(iat, exp), tt.wantTTL)
			}
			if claims["sub"] != tt.clientID || claims["client_id"] != tt.clientID {
				t.Errorf("sub = %v, client_id = %v, want both %q", claims["sub"], claims["client_id"], tt.clientID)
			}
			for name, want := range tt.wantClaims {
				if got := claims[name]; !oidcJSONEqual(got, want) {
					t.Errorf("claim %s = %#v, want %#v", name, got, want)
				}
			}

			// The same token checked for another audience must fail: aud is the requested resource, not a catch-all.
			_, err = jwt.Parse(raw, keys.Keyfunc, jwt.WithAudience("mqtt://someone-else"))
			if !errors.Is(err, jwt.ErrTokenInvalidAudience) {
				t.Errorf("verify against another audience: err = %v, want %v", err, jwt.ErrTokenInvalidAudience)
			}
		})
	}
}

func oidcClaimsSpan(iat, exp *jwt.NumericDate) any {
	if iat == nil || exp == nil {
		return fmt.Sprintf("iat %v, exp %v", iat, exp)
	}
	return exp.Sub(iat.Time)
}

// oidcJSONEqual compares values after a JSON round trip, so map[string]any and []any from the token compare with
// Go literals.
func oidcJSONEqual(a, b any) bool {
	ja, errA := json.Marshal(a)
	jb, errB := json.Marshal(b)
	return errA == nil && errB == nil && bytes.Equal(ja, jb)
}

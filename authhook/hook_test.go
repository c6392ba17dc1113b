package authhook

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	paho3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/golang-jwt/jwt/v5"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/idmq/idmq/internal/testkit"
)

// ---- test fixtures: a clock, a broker, clients (keys and the identity provider are testkit's) ----

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Now().Truncate(time.Second)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type testBroker struct {
	hook   *Hook
	server *mqtt.Server
	addr   string
	logs   *testkit.LogBuffer
	reg    *prometheus.Registry
}

func startBroker(t testing.TB, cfg Config, now func() time.Time) *testBroker {
	t.Helper()
	return startBrokerWith(t, Options{Config: cfg, Now: now})
}

// startBrokerWith starts a broker with the hook built from opts (Server, Registerer and Logger are filled
// in; DataDir too when empty), followed by the extra hooks.
func startBrokerWith(t testing.TB, opts Options, extra ...mqtt.Hook) *testBroker {
	t.Helper()
	logs := &testkit.LogBuffer{}
	m := testkit.NewMochi(testkit.MochiOptions{})
	reg := prometheus.NewRegistry()
	opts.Server, opts.Registerer = m.Server, reg
	opts.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if opts.DataDir == "" {
		opts.DataDir = t.TempDir()
	}
	h, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Stop() }) // after the server has stopped
	m.Serve(t, append([]mqtt.Hook{h}, extra...)...)
	return &testBroker{hook: h, server: m.Server, addr: m.TCP, logs: logs, reg: reg}
}

// allowAllACL lets tests move messages without the ACL hook. Tests only: never beside authhook in a broker.
type allowAllACL struct{ mqtt.HookBase }

func (*allowAllACL) ID() string                                 { return "test-allow-all" }
func (*allowAllACL) Provides(b byte) bool                       { return b == mqtt.OnACLCheck }
func (*allowAllACL) OnACLCheck(*mqtt.Client, string, bool) bool { return true }

// waitReady waits for the background key fetch of every provider.
func waitReady(t testing.TB, h *Hook) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		ready := true
		for _, p := range h.Providers() {
			ready = ready && p.Ready
		}
		if ready {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("providers not ready: %+v", h.Providers())
}

// connectV3 returns the CONNACK return code a paho 3.1.1 client receives.
func connectV3(t testing.TB, addr, clientID, username, password string) (byte, paho3.Client) {
	t.Helper()
	if username == "" && password != "" {
		username = "jwt" // MQTT 3.1.1 sends no password without a username [MQTT-3.1.2-22]
	}
	c, code, _ := testkit.ConnectV3(t, testkit.V3Options("tcp://"+addr, clientID, username, password))
	return code, c
}

// connectV5 connects a paho.golang MQTT 5 client to addr and returns it with its CONNACK; no CONNACK fails
// the test.
func connectV5(t testing.TB, addr string, cp *paho.Connect) (*testkit.V5Client, *paho.Connack) {
	t.Helper()
	c, ca, err := testkit.ConnectV5(t, testkit.DialTCP(t, addr), cp)
	if ca == nil {
		t.Fatalf("v5 connect: no CONNACK: %v", err)
	}
	return c, ca
}

func passwordConnect(clientID, username, token string) *paho.Connect {
	return &paho.Connect{ClientID: clientID, CleanStart: true, Username: username, UsernameFlag: username != "",
		Password: []byte(token), PasswordFlag: token != ""}
}

// ---- the CONNACK table from issue 3 ----

type claimsFn func(now time.Time) jwt.MapClaims

func baseClaims(iss string) claimsFn {
	return func(now time.Time) jwt.MapClaims {
		return jwt.MapClaims{"iss": iss, "sub": "alice", "aud": "mqtt", "azp": "https://app.example.com",
			"org_id": "acme", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
	}
}

func with(base claimsFn, edit func(c jwt.MapClaims, now time.Time)) claimsFn {
	return func(now time.Time) jwt.MapClaims {
		c := base(now)
		edit(c, now)
		return c
	}
}

func oidcConfig(issuer string) Config {
	return Config{Providers: []ProviderConfig{{
		Name: "corp", Type: TypeOIDC, Issuer: issuer, Audiences: []string{"mqtt"},
		AuthorizedParties: []string{"https://app.example.com"},
		Claims:            []ClaimMapping{{Path: "org_id", Attribute: "org_id", Required: true}, {Path: "app_metadata.plan", Attribute: "plan", Default: "free"}},
	}}}
}

func TestConnackCodes(t *testing.T) {
	clock := newFakeClock()
	rsaKey := testkit.NewKey(t, "RS256", "rsa-1")
	ecKey := testkit.NewKey(t, "ES256", "ec-1")
	edKey := testkit.NewKey(t, "EdDSA", "ed-1")
	stranger := testkit.NewKey(t, "RS256", "stranger")
	idp := testkit.NewIdP(t, rsaKey, ecKey, edKey)
	b := startBroker(t, oidcConfig(idp.Issuer()), clock.Now)
	waitReady(t, b.hook)
	base := baseClaims(idp.Issuer())

	noneToken := func(now time.Time) string {
		h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
		p, _ := json.Marshal(base(now))
		return h + "." + base64.RawURLEncoding.EncodeToString(p) + "."
	}
	// The RS256->HS256 key-confusion attack: HMAC over the token with the RSA public key as the secret.
	confusedToken := func(now time.Time) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, base(now))
		tok.Header["kid"] = rsaKey.KID
		s, err := tok.SignedString(rsaKey.PublicPEM(t))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	signed := func(k testkit.Key, c claimsFn) func(time.Time) string {
		return func(now time.Time) string { return k.Sign(t, c(now)) }
	}

	tests := []struct {
		name     string
		token    func(now time.Time) string
		username string
		v5       byte
		v3       byte
		reason   Reason
	}{
		{name: "valid RS256", token: signed(rsaKey, base), v5: 0x00, v3: 0x00},
		{name: "valid ES256", token: signed(ecKey, base), v5: 0x00, v3: 0x00},
		{name: "valid EdDSA", token: signed(edKey, base), v5: 0x00, v3: 0x00},
		{name: "username equal to the token's", token: signed(rsaKey, base), username: "alice", v5: 0x00, v3: 0x00},
		{name: "placeholder username", token: signed(rsaKey, base), username: "unused", v5: 0x00, v3: 0x00},
		{name: "another username", token: signed(rsaKey, base), username: "bob", v5: 0x86, v3: 0x04, reason: ReasonUsernameMismatch},
		{name: "expired", token: signed(rsaKey, with(base, func(c jwt.MapClaims, now time.Time) { c["exp"] = now.Add(-time.Minute).Unix() })), v5: 0x86, v3: 0x04, reason: ReasonTokenExpired},
		{name: "expired within leeway", token: signed(rsaKey, with(base, func(c jwt.MapClaims, now time.Time) { c["exp"] = now.Add(-2 * time.Second).Unix() })), v5: 0x00, v3: 0x00},
		{name: "no exp", token: signed(rsaKey, with(base, func(c jwt.MapClaims, now time.Time) { delete(c, "exp") })), v5: 0x86, v3: 0x04, reason: ReasonMissingClaim},
		{name: "nbf in the future", token: signed(rsaKey, with(base, func(c jwt.MapClaims, now time.Time) { c["nbf"] = now.Add(time.Minute).Unix() })), v5: 0x86, v3: 0x04, reason: ReasonTokenNotYetValid},
		{name: "iat in the future", token: signed(rsaKey, with(base, func(c jwt.MapClaims, now time.Time) { c["iat"] = now.Add(time.Minute).Unix() })), v5: 0x86, v3: 0x04, reason: ReasonTokenNotYetValid},
		{name: "wrong iss", token: signed(rsaKey, with(base, func(c jwt.MapClaims, now time.Time) { c["iss"] = "https://evil.example.com" })), v5: 0x86, v3: 0x04, reason: ReasonIssuerMismatch},
		{name: "iss with trailing slash", token: signed(rsaKey, with(base, func(c jwt.MapClaims, now time.Time) { c["iss"] = idp.Issuer() + "/" })), v5: 0x86, v3: 0x04, reason: ReasonIssuerMismatch},
		{name: "wrong aud", token: signed(rsaKey, with(base, func(c jwt.MapClaims, now time.Time) { c["aud"] = "other" })), v5: 0x86, v3: 0x04, reason: ReasonInvalidAudience},
		{name: "wrong azp", token: signed(rsaKey, with(base, func(c jwt.MapClaims, now time.Time) { c["azp"] = "https://evil.example.com" })), v5: 0x86, v3: 0x04, reason: ReasonInvalidAZP},
		{name: "missing required claim", token: signed(rsaKey, with(base, func(c jwt.MapClaims, now time.Time) { delete(c, "org_id") })), v5: 0x86, v3: 0x04, reason: ReasonMissingClaim},
		{name: "alg none", token: noneToken, v5: 0x86, v3: 0x04, reason: ReasonAlgNotAllowed},
		{name: "HS256 signed with the RSA public key", token: confusedToken, v5: 0x86, v3: 0x04, reason: ReasonAlgNotAllowed},
		{name: "signed by a key not in the JWKS under a known kid", token: func(now time.Time) string {
			k := stranger
			k.KID = rsaKey.KID
			return k.Sign(t, base(now))
		}, v5: 0x86, v3: 0x04, reason: ReasonInvalidSignature},
		{name: "unknown kid", token: signed(stranger, base), v5: 0x86, v3: 0x04, reason: ReasonUnknownKID},
		{name: "malformed base64", token: func(time.Time) string { return "eyJ!!!.e30@@@.sig$$$" }, v5: 0x86, v3: 0x04, reason: ReasonMalformed},
		{name: "not a JWT", token: func(time.Time) string { return "hunter2" }, v5: 0x86, v3: 0x04, reason: ReasonMalformed},
		{name: "1 MiB token", token: func(time.Time) string { return strings.Repeat("a", 1<<20) }, v5: 0x86, v3: 0x04, reason: ReasonTokenTooLarge},
		{name: "no credential", token: func(time.Time) string { return "" }, username: "alice", v5: 0x86, v3: 0x04, reason: ReasonMissingCredential},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			token := tt.token(clock.Now())
			t.Run("v3", func(t *testing.T) {
				code, _ := connectV3(t, b.addr, fmt.Sprintf("v3-%d", i), tt.username, token)
				if code != tt.v3 {
					t.Fatalf("CONNACK return code = 0x%02X, want 0x%02X", code, tt.v3)
				}
			})
			t.Run("v5", func(t *testing.T) {
				_, ca := connectV5(t, b.addr, passwordConnect(fmt.Sprintf("v5-%d", i), tt.username, token))
				if ca.ReasonCode != tt.v5 {
					t.Fatalf("CONNACK reason code = 0x%02X, want 0x%02X (%s)", ca.ReasonCode, tt.v5, ca.Properties.ReasonString)
				}
				if tt.reason != "" && ca.Properties.ReasonString != string(tt.reason) {
					t.Fatalf("reason string = %q, want %q", ca.Properties.ReasonString, tt.reason)
				}
			})
		})
	}
	logs := b.logs.String()
	if strings.Contains(logs, "eyJ") {
		t.Fatalf("a token leaked into the logs:\n%s", logs)
	}
}

func TestConnectAuthenticationMethod(t *testing.T) {
	clock := newFakeClock()
	key := testkit.NewKey(t, "ES256", "ec-1")
	idp := testkit.NewIdP(t, key)
	b := startBroker(t, oidcConfig(idp.Issuer()), clock.Now)
	waitReady(t, b.hook)
	token := key.Sign(t, baseClaims(idp.Issuer())(clock.Now()))

	tests := []struct {
		name   string
		method string
		data   string
		want   byte
	}{
		{name: "JWT", method: "JWT", data: token, want: 0x00},
		{name: "OAUTH2-JWT", method: "OAUTH2-JWT", data: token, want: 0x00},
		{name: "CUSTOM-JWT", method: "CUSTOM-JWT", data: token, want: 0x00},
		{name: "SCRAM-SHA-1", method: "SCRAM-SHA-1", data: token, want: 0x8C},
		{name: "JWT with a bad token", method: "JWT", data: "x.y.z", want: 0x86},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := fmt.Sprintf("m-%d", i)
			_, ca := connectV5(t, b.addr, &paho.Connect{ClientID: id, CleanStart: true,
				Properties: &paho.ConnectProperties{AuthMethod: tt.method, AuthData: []byte(tt.data)}})
			if ca.ReasonCode != tt.want {
				t.Fatalf("CONNACK = 0x%02X (%s), want 0x%02X", ca.ReasonCode, ca.Properties.ReasonString, tt.want)
			}
			if tt.want != 0 {
				return
			}
			cl, ok := b.server.Clients.Get(id)
			if !ok {
				t.Fatal("client not registered")
			}
			if cl.Properties.Props.AuthenticationData != nil {
				t.Fatal("Authentication Data kept on the client: storage would persist the token")
			}
			ident, ok := b.hook.Identity(cl)
			if !ok || ident.AuthMethod != tt.method || ident.ClientID != id || ident.Username != "alice" {
				t.Fatalf("identity = %+v, %v", ident, ok)
			}
		})
	}
}

func TestIdentityAttached(t *testing.T) {
	clock := newFakeClock()
	key := testkit.NewKey(t, "RS256", "rsa-1")
	idp := testkit.NewIdP(t, key)
	b := startBroker(t, oidcConfig(idp.Issuer()), clock.Now)
	waitReady(t, b.hook)
	claims := baseClaims(idp.Issuer())(clock.Now())
	claims["sub"] = "$SYS/a+b#c%d"
	claims["app_metadata"] = map[string]any{"plan": "pro"}
	claims["jti"] = "tok-1"

	code, _ := connectV3(t, b.addr, "dev-1", "", key.Sign(t, claims))
	if code != 0 {
		t.Fatalf("CONNACK 0x%02X", code)
	}
	cl, ok := b.server.Clients.Get("dev-1")
	if !ok {
		t.Fatal("client not registered")
	}
	want := "%24SYS%2Fa%2Bb%23c%25d"
	if got := string(cl.Properties.Username); got != want {
		t.Fatalf("client username = %q, want %q", got, want)
	}
	id, ok := b.hook.Identity(cl)
	if !ok {
		t.Fatal("no identity attached")
	}
	if id.Username != want || id.Subject != "$SYS/a+b#c%d" || id.Provider != "corp" || id.ClientID != "dev-1" ||
		id.TokenID != "tok-1" || id.Attributes["org_id"] != "acme" || id.Attributes["plan"] != "pro" ||
		!id.ExpiresAt.Equal(clock.Now().Add(time.Hour)) {
		t.Fatalf("identity = %+v", id)
	}
	if !b.hook.OnConnectAuthenticate(cl, packets.Packet{}) {
		t.Fatal("OnConnectAuthenticate refused a verified client")
	}
	b.hook.OnDisconnect(cl, nil, true)
	if _, ok := b.hook.Identity(cl); ok {
		t.Fatal("identity kept after disconnect")
	}
	if got := counterValue(b.hook.metrics.total.WithLabelValues("corp", "success", "ok")); got != 1 {
		t.Fatalf("idmq_auth_total success = %v, want 1", got)
	}
}

func TestRejectionLogAndMetric(t *testing.T) {
	clock := newFakeClock()
	key := testkit.NewKey(t, "RS256", "rsa-1")
	idp := testkit.NewIdP(t, key)
	b := startBroker(t, oidcConfig(idp.Issuer()), clock.Now)
	waitReady(t, b.hook)
	expired := baseClaims(idp.Issuer())(clock.Now())
	expired["exp"] = clock.Now().Add(-time.Hour).Unix()
	token := key.Sign(t, expired)

	if code, _ := connectV3(t, b.addr, "logged-client", "", token); code != 0x04 {
		t.Fatalf("CONNACK 0x%02X", code)
	}
	lines := strings.Split(strings.TrimSpace(b.logs.String()), "\n")
	var refused []map[string]any
	for _, l := range lines {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "authhook: connection refused" {
			refused = append(refused, m)
		}
	}
	if len(refused) != 1 {
		t.Fatalf("want one rejection line, got %d:\n%s", len(refused), b.logs.String())
	}
	m := refused[0]
	if m["provider"] != "corp" || m["reason"] != "token_expired" || m["client"] != "logged-client" || !strings.HasPrefix(m["remote"].(string), "127.0.0.1:") {
		t.Fatalf("log line = %v", m)
	}
	if strings.Contains(b.logs.String(), token[:20]) {
		t.Fatal("token in logs")
	}
	if got := counterValue(b.hook.metrics.total.WithLabelValues("corp", "failure", "token_expired")); got != 1 {
		t.Fatalf("idmq_auth_total failure = %v, want 1", got)
	}
}

func TestSessionTakeoverAcrossUsernames(t *testing.T) {
	clock := newFakeClock()
	key := testkit.NewKey(t, "ES256", "ec-1")
	idp := testkit.NewIdP(t, key)
	b := startBroker(t, oidcConfig(idp.Issuer()), clock.Now)
	waitReady(t, b.hook)
	tokenFor := func(sub string) string {
		c := baseClaims(idp.Issuer())(clock.Now())
		c["sub"] = sub
		return key.Sign(t, c)
	}
	expiry := uint32(3600)
	alice := &paho.Connect{ClientID: "shared", Password: []byte(tokenFor("alice")), PasswordFlag: true,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}}
	if _, ca := connectV5(t, b.addr, alice); ca.ReasonCode != 0 {
		t.Fatalf("alice: 0x%02X", ca.ReasonCode)
	}
	// bob may not take alice's live session...
	if _, ca := connectV5(t, b.addr, passwordConnect("shared", "", tokenFor("bob"))); ca.ReasonCode != 0x85 {
		t.Fatalf("bob v5 over live session: 0x%02X, want 0x85", ca.ReasonCode)
	}
	if code, _ := connectV3(t, b.addr, "shared", "", tokenFor("bob")); code != 0x02 {
		t.Fatalf("bob v3 over live session: 0x%02X, want 0x02", code)
	}
	// ...nor a persisted one, as restored from storage after a restart.
	cl, _ := b.server.Clients.Get("shared")
	b.server.Clients.Delete("shared")
	persisted := b.server.NewClient(nil, "test", "persisted", false)
	persisted.Properties.Username = cl.Properties.Username
	b.server.Clients.Add(persisted)
	if code, _ := connectV3(t, b.addr, "persisted", "", tokenFor("bob")); code != 0x02 {
		t.Fatalf("bob over persisted session: 0x%02X, want 0x02", code)
	}
	// alice herself takes her session over.
	if code, _ := connectV3(t, b.addr, "persisted", "", tokenFor("alice")); code != 0 {
		t.Fatalf("alice over her own persisted session: 0x%02X, want 0", code)
	}
}

func TestUnknownKIDRotationOneFetch(t *testing.T) {
	clock := newFakeClock()
	oldKey := testkit.NewKey(t, "RS256", "old")
	newKey := testkit.NewKey(t, "ES256", "new")
	idp := testkit.NewIdP(t, oldKey)
	b := startBroker(t, oidcConfig(idp.Issuer()), clock.Now)
	waitReady(t, b.hook)
	base := baseClaims(idp.Issuer())

	// Before rotation the kid is unknown: one fetch, then refused.
	before := idp.Fetches()
	if _, ca := connectV5(t, b.addr, passwordConnect("early", "", newKey.Sign(t, base(clock.Now())))); ca.ReasonCode != 0x86 || ca.Properties.ReasonString != string(ReasonUnknownKID) {
		t.Fatalf("unknown kid: 0x%02X %q", ca.ReasonCode, ca.Properties.ReasonString)
	}
	if got := idp.Fetches() - before; got != 1 {
		t.Fatalf("unknown kid caused %d fetches, want 1", got)
	}
	idp.SetKeys(oldKey, newKey)
	// Within the cooldown the IdP is not asked again, however often the kid is presented.
	before = idp.Fetches()
	if _, ca := connectV5(t, b.addr, passwordConnect("cooldown", "", newKey.Sign(t, base(clock.Now())))); ca.ReasonCode != 0x86 {
		t.Fatalf("within cooldown: 0x%02X", ca.ReasonCode)
	}
	if got := idp.Fetches() - before; got != 0 {
		t.Fatalf("fetches within cooldown = %d, want 0", got)
	}

	clock.Add(31 * time.Second)
	// Hold the JWKS response until every client is waiting, so they all share one fetch.
	release := idp.Hold()
	before = idp.Fetches()
	const clients = 200
	codes := make(chan byte, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := base(clock.Now())
			c["sub"] = fmt.Sprintf("user-%d", i) // distinct tokens: no cache hits
			_, ca := connectV5(t, b.addr, passwordConnect(fmt.Sprintf("rot-%d", i), "", newKey.Sign(t, c)))
			codes <- ca.ReasonCode
		}()
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return idp.Fetches()-before >= 1 }, "no JWKS fetch")
	time.Sleep(200 * time.Millisecond) // let the other CONNECTs arrive while the fetch is held
	release()
	wg.Wait()
	close(codes)
	ok := 0
	for c := range codes {
		if c == 0 {
			ok++
		}
	}
	if ok != clients {
		t.Fatalf("%d of %d CONNECTs succeeded after rotation", ok, clients)
	}
	if got := idp.Fetches() - before; got != 1 {
		t.Fatalf("%d JWKS fetches for %d concurrent CONNECTs, want 1", got, clients)
	}
}

func TestJWKSDownAfterStart(t *testing.T) {
	clock := newFakeClock()
	key := testkit.NewKey(t, "EdDSA", "ed-1")
	idp := testkit.NewIdP(t, key)
	b := startBroker(t, oidcConfig(idp.Issuer()), clock.Now)
	waitReady(t, b.hook)
	idp.SetDown(true)
	st := b.hook.Check(context.Background())
	if st[0].LastError == "" || !strings.Contains(st[0].LastError, "HTTP status 503") {
		t.Fatalf("check with the IdP down = %+v", st)
	}
	if ps := b.hook.Providers(); !ps[0].Ready || ps[0].Keys != 1 {
		t.Fatalf("cached keys dropped: %+v", ps)
	}
	c := baseClaims(idp.Issuer())(clock.Now())
	c["sub"] = "fresh-token"
	if _, ca := connectV5(t, b.addr, passwordConnect("down-1", "", key.Sign(t, c))); ca.ReasonCode != 0 {
		t.Fatalf("cached key refused while the JWKS endpoint is down: 0x%02X %s", ca.ReasonCode, ca.Properties.ReasonString)
	}
}

func TestProviderNeverReachable(t *testing.T) {
	clock := newFakeClock()
	key := testkit.NewKey(t, "RS256", "rsa-1")
	idp := testkit.NewIdP(t, key)
	idp.SetDown(true)
	b := startBroker(t, oidcConfig(idp.Issuer()), clock.Now)
	testkit.Eventually(t, 10*time.Second, func() bool { return b.hook.Providers()[0].LastError != "" }, "the provider reports no error")
	if ps := b.hook.Providers(); ps[0].Ready {
		t.Fatalf("provider ready without keys: %+v", ps)
	}
	clock.Add(time.Minute) // past the cooldown of the background fetch
	_, ca := connectV5(t, b.addr, passwordConnect("nr", "", key.Sign(t, baseClaims(idp.Issuer())(clock.Now()))))
	if ca.ReasonCode != 0x86 || ca.Properties.ReasonString != string(ReasonKeysUnavailable) {
		t.Fatalf("CONNACK = 0x%02X %q, want 0x86 keys_unavailable", ca.ReasonCode, ca.Properties.ReasonString)
	}
}

func TestConnectWaitsAtMostFetchWait(t *testing.T) {
	clock := newFakeClock()
	key := testkit.NewKey(t, "RS256", "rsa-1")
	other := testkit.NewKey(t, "RS256", "rsa-2")
	idp := testkit.NewIdP(t, key)
	h, err := New(Options{Config: oidcConfig(idp.Issuer()), Now: clock.Now, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Stop()
	waitReady(t, h)
	for _, rks := range h.ps().remotes {
		rks[0].fetchWait = 100 * time.Millisecond
	}
	release := idp.Hold()
	defer release()
	start := time.Now()
	_, err = h.Verify(context.Background(), other.Sign(t, baseClaims(idp.Issuer())(clock.Now())), "")
	if ReasonOf(err) != ReasonUnknownKID {
		t.Fatalf("err = %v", err)
	}
	if waited := time.Since(start); waited > time.Second {
		t.Fatalf("Verify waited %s for a hung JWKS endpoint", waited)
	}
}

func TestNewDoesNotBlockOnUnreachableIdP(t *testing.T) {
	// A listener that accepts and never answers.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	start := time.Now()
	h, err := New(Options{Config: oidcConfig("http://" + ln.Addr().String()), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("New took %s", d)
	}
	if h.Providers()[0].Ready {
		t.Fatal("provider ready without keys")
	}
	_ = h.Stop()
}

func TestAnonymous(t *testing.T) {
	tests := []struct {
		name  string
		allow bool
		want  byte
	}{
		{name: "refused by default", allow: false, want: 0x86},
		{name: "allowed when configured", allow: true, want: 0x00},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := startBroker(t, Config{AllowAnonymous: tt.allow}, nil)
			_, ca := connectV5(t, b.addr, &paho.Connect{ClientID: "anon", CleanStart: true, Username: "alice", UsernameFlag: true})
			if ca.ReasonCode != tt.want {
				t.Fatalf("CONNACK 0x%02X, want 0x%02X", ca.ReasonCode, tt.want)
			}
			if tt.want != 0 {
				return
			}
			cl, _ := b.server.Clients.Get("anon")
			id, ok := b.hook.Identity(cl)
			if !ok || id.Provider != ProviderAnonymous || id.Username != "" || len(cl.Properties.Username) != 0 {
				t.Fatalf("anonymous identity = %+v (username on client %q)", id, cl.Properties.Username)
			}
		})
	}
}

func TestVerifyNamedProvider(t *testing.T) {
	clock := newFakeClock()
	key := testkit.NewKey(t, "ES256", "ec-1")
	idp := testkit.NewIdP(t, key)
	cfg := oidcConfig(idp.Issuer())
	cfg.Providers = append(cfg.Providers, ProviderConfig{Name: "local", Type: TypeLocal})
	h, err := New(Options{Config: cfg, Now: clock.Now, DataDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Stop()
	waitReady(t, h)
	token := key.Sign(t, baseClaims(idp.Issuer())(clock.Now()))
	tests := []struct {
		name     string
		provider string
		want     Reason
	}{
		{name: "by iss", provider: "", want: ""},
		{name: "named and matching", provider: "corp", want: ""},
		{name: "named, another provider", provider: "local", want: ReasonIssuerMismatch},
		{name: "unknown provider", provider: "nope", want: ReasonProviderNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 2 { // the second round is served from the cache
				_, err := h.Verify(context.Background(), token, tt.provider)
				if ReasonOf(err) != tt.want || (tt.want == "" && err != nil) {
					t.Fatalf("err = %v, want reason %q", err, tt.want)
				}
			}
		})
	}
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// BenchmarkVerify compares the full CONNECT-path verification (parse, issuer selection, alg allow-list, key
// lookup through keyfunc, signature, claims, mapping; cache off) with a bare jwt.Parse using the same key.
func BenchmarkVerify(b *testing.B) {
	for _, alg := range []string{"RS256", "ES256", "EdDSA"} {
		key := testkit.NewKey(b, alg, "k1")
		idp := testkit.NewIdP(b, key)
		cfg := oidcConfig(idp.Issuer())
		cfg.CacheSize = -1
		h, err := New(Options{Config: cfg, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		waitReady(b, h)
		token := key.Sign(b, baseClaims(idp.Issuer())(time.Now()))
		pub := key.Signer.Public()
		b.Run(alg+"/idmq", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := h.Verify(context.Background(), token, ""); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(alg+"/jwt.Parse", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := jwt.Parse(token, func(*jwt.Token) (any, error) { return pub, nil }); err != nil {
					b.Fatal(err)
				}
			}
		})
		_ = h.Stop()
	}
}

func BenchmarkVerifyCacheHit(b *testing.B) {
	key := testkit.NewKey(b, "ES256", "k1")
	idp := testkit.NewIdP(b, key)
	h, err := New(Options{Config: oidcConfig(idp.Issuer()), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer h.Stop()
	waitReady(b, h)
	token := key.Sign(b, baseClaims(idp.Issuer())(time.Now()))
	ctx := context.Background()
	if _, err := h.Verify(ctx, token, ""); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := h.Verify(ctx, token, ""); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// A CONNECT or AUTH with a cached token is answered from the packet's bytes: no copy of the token, no
// allocation at all.
func TestCachedCredentialAllocatesNothing(t *testing.T) {
	h := newLocalHook(t, t.TempDir(), nil)
	token, _ := h.LocalIssuer().Mint("alice", time.Hour, nil, TopicGrants{})
	credential := []byte(token)
	first, err := h.verifyCredential(credential, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if again, err := h.verifyCredential(credential, "c1"); err != nil || again != first {
		t.Fatalf("second lookup: %v, %v; want the cached identity", again, err)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = h.verifyCredential(credential, "c1") }); n != 0 {
		t.Fatalf("cached credential allocates %v times", n)
	}
}

// The hit path must not allocate; asserted, not just reported.
func TestCacheHitAllocatesNothing(t *testing.T) {
	h := newLocalHook(t, t.TempDir(), nil)
	token, _ := h.LocalIssuer().Mint("alice", time.Hour, map[string]string{"role": "admin"}, TopicGrants{})
	ctx := context.Background()
	if _, err := h.Verify(ctx, token, ""); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = h.Verify(ctx, token, "") }); n != 0 {
		t.Fatalf("cache hit allocates %v times", n)
	}
}

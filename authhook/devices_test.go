package authhook

import (
	"cmp"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/idmq/idmq/internal/testkit"
)

// ---- device fixtures ----

const testProject = "my-project"

func deviceClaims(now time.Time) jwt.MapClaims {
	return jwt.MapClaims{"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "aud": testProject}
}

// selfSignedPEM is a self-signed certificate for k, valid until notAfter, as devices register them.
func selfSignedPEM(t testing.TB, k testkit.Key, notAfter time.Time) string {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "unused"},
		NotBefore: notAfter.Add(-48 * time.Hour), NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Signer.Public(), k.Signer)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func publicPEM(t testing.TB, k testkit.Key) string { return string(k.PublicPEM(t)) }

func devicesConfig(devices ...DeviceConfig) Config {
	return Config{Providers: []ProviderConfig{{Name: "fleet", Type: TypeDevices, Project: testProject, Devices: devices}}}
}

func devicePath(project, id string) string {
	return "projects/" + project + "/locations/us-central1/registries/thermostats/devices/" + id
}

// ---- the CONNACK table of issue 7 ----

func TestDeviceConnackCodes(t *testing.T) {
	clock := newFakeClock()
	rsaKey := testkit.NewKey(t, "RS256", "")
	ecKey := testkit.NewKey(t, "ES256", "")
	edKey := testkit.NewKey(t, "EdDSA", "")
	oldKey := testkit.NewKey(t, "ES256", "")
	newKey := testkit.NewKey(t, "RS256", "")
	stranger := testkit.NewKey(t, "RS256", "")
	now := clock.Now()
	b := startBroker(t, devicesConfig(
		DeviceConfig{ID: "rsa-dev", Keys: []DeviceKey{{PEM: publicPEM(t, rsaKey)}}},
		DeviceConfig{ID: "ec-dev", Keys: []DeviceKey{{PEM: selfSignedPEM(t, ecKey, now.Add(365*24*time.Hour))}}},
		DeviceConfig{ID: "ed-dev", Keys: []DeviceKey{{PEM: publicPEM(t, edKey)}}},
		DeviceConfig{ID: "rotated", Keys: []DeviceKey{
			{PEM: publicPEM(t, oldKey), Expires: now.Add(-time.Hour)},
			{PEM: publicPEM(t, newKey), Expires: now.Add(time.Hour)},
		}},
		DeviceConfig{ID: "key-expired", Keys: []DeviceKey{{PEM: publicPEM(t, rsaKey), Expires: now.Add(-time.Second)}}},
		DeviceConfig{ID: "cert-expired", Keys: []DeviceKey{{PEM: selfSignedPEM(t, ecKey, now.Add(-time.Minute))}}},
		DeviceConfig{ID: "blocked", Keys: []DeviceKey{{PEM: publicPEM(t, rsaKey)}}, Blocked: true},
	), clock.Now)

	signed := func(k testkit.Key, edit func(c jwt.MapClaims, now time.Time)) func(now time.Time) string {
		return func(now time.Time) string {
			c := deviceClaims(now)
			if edit != nil {
				edit(c, now)
			}
			return k.SignWithoutKID(t, c)
		}
	}
	// The RS256->HS256 confusion: HMAC over the token with the device's public key PEM as the secret.
	hs256 := func(now time.Time) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, deviceClaims(now)).SignedString([]byte(publicPEM(t, rsaKey)))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// The ClearBlade / Cloud IoT samples' token, built by hand: RS256, base64url without padding, iat/exp/aud.
	clearBlade := func(now time.Time) string {
		enc := base64.RawURLEncoding.EncodeToString
		signing := enc([]byte(`{"typ":"JWT","alg":"RS256"}`)) + "." +
			enc(fmt.Appendf(nil, `{"iat":%d,"exp":%d,"aud":%q}`, now.Unix(), now.Add(20*time.Minute).Unix(), testProject))
		sum := sha256.Sum256([]byte(signing))
		sig, err := rsa.SignPKCS1v15(rand.Reader, rsaKey.Signer.(*rsa.PrivateKey), crypto.SHA256, sum[:])
		if err != nil {
			t.Fatal(err)
		}
		tok := signing + "." + enc(sig)
		if strings.Contains(tok, "=") {
			t.Fatal("padding in a ClearBlade-format token")
		}
		return tok
	}

	tests := []struct {
		name     string
		clientID string
		username string
		token    func(now time.Time) string
		v5, v3   byte
		reason   Reason
		counted  string // provider label of the refusal in idmq_auth_total; "" = fleet
	}{
		{name: "RS256 public key, bare id", clientID: "rsa-dev", username: "unused", token: signed(rsaKey, nil)},
		{name: "ES256 certificate, full path", clientID: devicePath(testProject, "ec-dev"), username: "unused", token: signed(ecKey, nil)},
		{name: "username ignored", clientID: "rsa-dev", username: "anything-at-all", token: signed(rsaKey, nil)},
		{name: "ClearBlade docs format", clientID: "rsa-dev", username: "unused", token: clearBlade},
		{name: "second key valid while the first expired", clientID: "rotated", token: signed(newKey, nil)},
		{name: "aud of a list with the project", clientID: "rsa-dev", token: signed(rsaKey, func(c jwt.MapClaims, _ time.Time) { c["aud"] = []string{testProject} })},
		{name: "wrong aud", clientID: "rsa-dev", token: signed(rsaKey, func(c jwt.MapClaims, _ time.Time) { c["aud"] = "other-project" }),
			v5: 0x86, v3: 0x04, reason: ReasonInvalidAudience},
		{name: "no aud", clientID: "rsa-dev", token: signed(rsaKey, func(c jwt.MapClaims, _ time.Time) { delete(c, "aud") }),
			v5: 0x86, v3: 0x04, reason: ReasonMissingClaim},
		{name: "iat 11 min in the past", clientID: "rsa-dev", token: signed(rsaKey, func(c jwt.MapClaims, now time.Time) { c["iat"] = now.Add(-11 * time.Minute).Unix() }),
			v5: 0x86, v3: 0x04, reason: ReasonIATSkew},
		{name: "iat 11 min in the future", clientID: "rsa-dev", token: signed(rsaKey, func(c jwt.MapClaims, now time.Time) { c["iat"] = now.Add(11 * time.Minute).Unix() }),
			v5: 0x86, v3: 0x04, reason: ReasonIATSkew},
		{name: "iat 9 min in the past", clientID: "rsa-dev", token: signed(rsaKey, func(c jwt.MapClaims, now time.Time) { c["iat"] = now.Add(-9 * time.Minute).Unix() })},
		{name: "no iat", clientID: "rsa-dev", token: signed(rsaKey, func(c jwt.MapClaims, _ time.Time) { delete(c, "iat") }),
			v5: 0x86, v3: 0x04, reason: ReasonMissingClaim},
		{name: "exp - iat = 24h + 2min", clientID: "rsa-dev", token: signed(rsaKey, func(c jwt.MapClaims, now time.Time) { c["exp"] = now.Add(24*time.Hour + 2*time.Minute).Unix() }),
			v5: 0x86, v3: 0x04, reason: ReasonLifetimeTooLong},
		{name: "exp - iat = 24h", clientID: "rsa-dev", token: signed(rsaKey, func(c jwt.MapClaims, now time.Time) { c["exp"] = now.Add(24 * time.Hour).Unix() })},
		{name: "no exp", clientID: "rsa-dev", token: signed(rsaKey, func(c jwt.MapClaims, _ time.Time) { delete(c, "exp") }),
			v5: 0x86, v3: 0x04, reason: ReasonMissingClaim},
		{name: "expired", clientID: "rsa-dev", token: signed(rsaKey, func(c jwt.MapClaims, now time.Time) {
			c["iat"], c["exp"] = now.Add(-9*time.Minute).Unix(), now.Add(-time.Minute).Unix()
		}), v5: 0x86, v3: 0x04, reason: ReasonTokenExpired},
		{name: "expired key", clientID: "key-expired", token: signed(rsaKey, nil), v5: 0x86, v3: 0x04, reason: ReasonKeyExpired},
		{name: "expired certificate", clientID: "cert-expired", token: signed(ecKey, nil), v5: 0x86, v3: 0x04, reason: ReasonKeyExpired},
		{name: "signed with the expired first key", clientID: "rotated", token: signed(oldKey, nil), v5: 0x86, v3: 0x04, reason: ReasonKeyExpired},
		{name: "signed by another key", clientID: "rsa-dev", token: signed(stranger, nil), v5: 0x86, v3: 0x04, reason: ReasonInvalidSignature},
		// The signature comes first: a forged token learns nothing about its claims (EMQX reads exp first).
		{name: "signed by another key, expired, wrong aud", clientID: "rsa-dev", token: signed(stranger, func(c jwt.MapClaims, now time.Time) {
			c["aud"], c["iat"], c["exp"] = "other-project", now.Add(-2*time.Hour).Unix(), now.Add(-time.Hour).Unix()
		}), v5: 0x86, v3: 0x04, reason: ReasonInvalidSignature},
		{name: "another device's token", clientID: "rsa-dev", token: signed(ecKey, nil), v5: 0x86, v3: 0x04, reason: ReasonInvalidSignature},
		{name: "blocked device", clientID: "blocked", token: signed(rsaKey, nil), v5: 0x86, v3: 0x04, reason: ReasonDeviceBlocked},
		{name: "unknown device", clientID: "nobody", token: signed(rsaKey, nil), v5: 0x86, v3: 0x04, reason: ReasonUnknownDevice},
		{name: "client id path with wrong project", clientID: devicePath("other-project", "rsa-dev"), token: signed(rsaKey, nil),
			v5: 0x86, v3: 0x04, reason: ReasonProjectMismatch},
		{name: "client id path malformed", clientID: "projects/my-project/devices/rsa-dev", token: signed(rsaKey, nil),
			v5: 0x86, v3: 0x04, reason: ReasonUnknownDevice},
		{name: "alg HS256", clientID: "rsa-dev", token: hs256, v5: 0x86, v3: 0x04, reason: ReasonAlgNotAllowed},
		{name: "EdDSA not opted in", clientID: "ed-dev", token: signed(edKey, nil), v5: 0x86, v3: 0x04, reason: ReasonAlgNotAllowed},
		// An iss makes a token an identity provider's: device keys are never tried.
		{name: "device token with an iss", clientID: "rsa-dev", token: signed(rsaKey, func(c jwt.MapClaims, _ time.Time) { c["iss"] = testProject }),
			v5: 0x86, v3: 0x04, reason: ReasonIssuerMismatch, counted: "unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			token := tt.token(clock.Now())
			t.Run("v3", func(t *testing.T) {
				code, _ := connectV3(t, b.addr, tt.clientID, tt.username, token)
				if code != tt.v3 {
					t.Fatalf("CONNACK return code = 0x%02X, want 0x%02X", code, tt.v3)
				}
			})
			t.Run("v5", func(t *testing.T) {
				_, ca := connectV5(t, b.addr, passwordConnect(tt.clientID, tt.username, token))
				if ca.ReasonCode != tt.v5 {
					t.Fatalf("CONNACK reason code = 0x%02X (%s), want 0x%02X", ca.ReasonCode, ca.Properties.ReasonString, tt.v5)
				}
				if tt.reason != "" && ca.Properties.ReasonString != string(tt.reason) {
					t.Fatalf("reason string = %q, want %q", ca.Properties.ReasonString, tt.reason)
				}
				if tt.reason != "" {
					provider := cmp.Or(tt.counted, "fleet")
					if got := counterValue(b.hook.metrics.total.WithLabelValues(provider, "failure", string(tt.reason))); got == 0 {
						t.Fatalf("idmq_auth_total{provider=%s,reason=%s} not counted", provider, tt.reason)
					}
				}
			})
		})
	}
	if logs := b.logs.String(); strings.Contains(logs, "eyJ") {
		t.Fatalf("a token leaked into the logs:\n%s", logs)
	}
}

func TestDeviceEdDSAOptIn(t *testing.T) {
	clock := newFakeClock()
	edKey := testkit.NewKey(t, "EdDSA", "")
	cfg := devicesConfig(DeviceConfig{ID: "ed-dev", Keys: []DeviceKey{{PEM: selfSignedPEM(t, edKey, clock.Now().Add(time.Hour))}}})
	cfg.Providers[0].Algorithms = []string{"RS256", "ES256", "EdDSA"}
	b := startBroker(t, cfg, clock.Now)
	if _, ca := connectV5(t, b.addr, passwordConnect("ed-dev", "", edKey.SignWithoutKID(t, deviceClaims(clock.Now())))); ca.ReasonCode != 0 {
		t.Fatalf("CONNACK 0x%02X %s", ca.ReasonCode, ca.Properties.ReasonString)
	}
}

func TestDeviceIdentityAndLog(t *testing.T) {
	clock := newFakeClock()
	key := testkit.NewKey(t, "ES256", "")
	b := startBroker(t, devicesConfig(DeviceConfig{ID: "thermo+42", Keys: []DeviceKey{{PEM: publicPEM(t, key)}}}), clock.Now)
	clientID := devicePath(testProject, "thermo+42")
	claims := deviceClaims(clock.Now())
	claims["jti"] = "t-1"
	code, _ := connectV3(t, b.addr, clientID, "unused", key.SignWithoutKID(t, claims))
	if code != 0 {
		t.Fatalf("CONNACK 0x%02X", code)
	}
	cl, ok := b.server.Clients.Get(clientID)
	if !ok {
		t.Fatal("client not registered")
	}
	id, ok := b.hook.Identity(cl)
	if !ok {
		t.Fatal("no identity")
	}
	want := map[string]string{"device_id": "thermo+42", "registry": "thermostats", "region": "us-central1"}
	if id.Username != "thermo%2B42" || string(cl.Properties.Username) != "thermo%2B42" || id.Subject != "thermo+42" ||
		id.ClientID != clientID || id.Provider != "fleet" || id.TokenID != "t-1" ||
		!id.ExpiresAt.Equal(clock.Now().Add(time.Hour)) || fmt.Sprint(id.Attributes) != fmt.Sprint(want) {
		t.Fatalf("identity = %+v", id)
	}
	if got := counterValue(b.hook.metrics.total.WithLabelValues("fleet", "success", "ok")); got != 1 {
		t.Fatalf("idmq_auth_total success = %v", got)
	}

	// A refusal names the device and the reason, never the token.
	if code, _ := connectV3(t, b.addr, "ghost", "unused", key.SignWithoutKID(t, deviceClaims(clock.Now()))); code != 0x04 {
		t.Fatalf("unknown device: CONNACK 0x%02X", code)
	}
	logs := b.logs.String()
	if !strings.Contains(logs, `"reason":"unknown_device"`) || !strings.Contains(logs, `no device \"ghost\" is registered`) || !strings.Contains(logs, `"provider":"fleet"`) {
		t.Fatalf("refusal log:\n%s", logs)
	}
}

// With several devices providers, the client id path's project, else the token's aud, picks one; a device id
// may exist in both with different keys.
func TestDeviceProviderSelection(t *testing.T) {
	clock := newFakeClock()
	keyA, keyB := testkit.NewKey(t, "ES256", ""), testkit.NewKey(t, "ES256", "")
	cfg := Config{Providers: []ProviderConfig{
		{Name: "fleet-a", Type: TypeDevices, Project: "proj-a", Devices: []DeviceConfig{{ID: "d1", Keys: []DeviceKey{{PEM: publicPEM(t, keyA)}}}}},
		{Name: "fleet-b", Type: TypeDevices, Project: "proj-b", Devices: []DeviceConfig{{ID: "d1", Keys: []DeviceKey{{PEM: publicPEM(t, keyB)}}}}},
	}}
	h, err := New(Options{Config: cfg, Now: clock.Now, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Stop()
	token := func(k testkit.Key, aud string) string {
		c := deviceClaims(clock.Now())
		c["aud"] = aud
		return k.SignWithoutKID(t, c)
	}
	tests := []struct {
		name     string
		token    string
		clientID string
		provider string
		reason   Reason
	}{
		{name: "bare id, aud selects a", token: token(keyA, "proj-a"), clientID: "d1", provider: "fleet-a"},
		{name: "bare id, aud selects b", token: token(keyB, "proj-b"), clientID: "d1", provider: "fleet-b"},
		{name: "path selects b", token: token(keyB, "proj-b"), clientID: devicePath("proj-b", "d1"), provider: "fleet-b"},
		{name: "path selects a, aud of b", token: token(keyA, "proj-b"), clientID: devicePath("proj-a", "d1"), reason: ReasonInvalidAudience},
		{name: "path selects a, key of b", token: token(keyB, "proj-a"), clientID: devicePath("proj-a", "d1"), reason: ReasonInvalidSignature},
		{name: "bare id, aud of no provider", token: token(keyA, "proj-c"), clientID: "d1", reason: ReasonInvalidAudience},
		{name: "path of no provider", token: token(keyA, "proj-a"), clientID: devicePath("proj-c", "d1"), reason: ReasonProjectMismatch},
		{name: "no client id (Verify, token exchange)", token: token(keyA, "proj-a"), clientID: "", reason: ReasonUnknownDevice},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := h.verify(tt.token, "", tt.clientID)
			if ReasonOf(err) != tt.reason || (tt.reason == "" && err != nil) {
				t.Fatalf("err = %v, want reason %q", err, tt.reason)
			}
			if tt.reason == "" && id.Provider != tt.provider {
				t.Fatalf("verified by %q, want %q", id.Provider, tt.provider)
			}
		})
	}
	if _, err := h.Verify(context.Background(), token(keyA, "proj-a"), ""); ReasonOf(err) != ReasonUnknownDevice {
		t.Fatalf("Verify of a device token: %v", err)
	}
}

// A device's token expires like a user's (DISCONNECT 0xA0 at exp + leeway) and is renewed by MQTT 5
// re-authentication, checked against the keys of the device the connection's client id names.
func TestDeviceExpiryAndReauth(t *testing.T) {
	devKey, otherKey := testkit.NewKey(t, "ES256", ""), testkit.NewKey(t, "RS256", "")
	cfg := Config{Leeway: testLeeway, Providers: []ProviderConfig{
		{Name: "local", Type: TypeLocal},
		{Name: "fleet", Type: TypeDevices, Project: testProject, Devices: []DeviceConfig{
			{ID: "thermo-1", Keys: []DeviceKey{{PEM: publicPEM(t, devKey)}}},
			{ID: "thermo-2", Keys: []DeviceKey{{PEM: publicPEM(t, otherKey)}}},
		}},
	}}
	changes := &identityChanges{}
	b := startBrokerWith(t, Options{Config: cfg, OnIdentityChange: changes.record})
	mint := func(k testkit.Key, ttl time.Duration) (string, time.Time) {
		now := time.Now()
		c := deviceClaims(now)
		c["exp"] = now.Add(ttl).Unix()
		return k.SignWithoutKID(t, c), time.Unix(now.Add(ttl).Unix(), 0).Add(testLeeway)
	}

	t.Run("expiry", func(t *testing.T) {
		token, deadline := mint(devKey, 2*time.Second)
		c, ca := connectV5(t, b.addr, testkit.JWTConnect("thermo-1", "", token))
		if ca.ReasonCode != 0 {
			t.Fatalf("CONNACK 0x%02X %s", ca.ReasonCode, ca.Properties.ReasonString)
		}
		td := c.NextDisconnect(t, time.Until(deadline)+2*time.Second)
		checkOnTime(t, "DISCONNECT", td.At, deadline)
		if td.ReasonCode != 0xA0 || td.Properties == nil || td.Properties.ReasonString != expiredReason {
			t.Fatalf("DISCONNECT 0x%02X %+v, want 0xA0", td.ReasonCode, td.Properties)
		}
	})

	t.Run("reauth renews", func(t *testing.T) {
		token, firstDeadline := mint(devKey, 2*time.Second)
		c, ca := connectV5(t, b.addr, testkit.JWTConnect("thermo-1", "", token))
		if ca.ReasonCode != 0 {
			t.Fatalf("CONNACK 0x%02X", ca.ReasonCode)
		}
		for round := range 3 {
			time.Sleep(time.Second)
			fresh, _ := mint(devKey, 3*time.Second)
			if ar := reauth(t, c, "JWT", fresh); !ar.Success {
				t.Fatalf("round %d: AUTH 0x%02X %+v", round, ar.ReasonCode, ar.Properties)
			}
		}
		if !time.Now().After(firstDeadline) {
			t.Fatal("the test did not outlive the first token")
		}
		c.NoDisconnect(t, 0) // despite re-authentication
		cl, _ := b.server.Clients.Get("thermo-1")
		id, _ := b.hook.Identity(cl)
		if id.Username != "thermo-1" || id.Provider != "fleet" || time.Until(id.ExpiresAt) > 3*time.Second || changes.count("thermo-1") != 3 {
			t.Fatalf("identity after re-authentication = %+v (%d changes)", id, changes.count("thermo-1"))
		}
	})

	refusals := []struct {
		name   string
		token  func() string
		reason Reason
	}{
		{name: "another device's token", token: func() string { tok, _ := mint(otherKey, time.Hour); return tok }, reason: ReasonInvalidSignature},
		{name: "a user token with the device's name", token: func() string {
			tok, _ := mintLocal(t, b.hook, "thermo-1", time.Hour, nil)
			return tok
		}, reason: ReasonIssuerMismatch},
		{name: "a stale device token", token: func() string {
			c := deviceClaims(time.Now().Add(-20 * time.Minute))
			return devKey.SignWithoutKID(t, c)
		}, reason: ReasonIATSkew},
	}
	for _, tt := range refusals {
		t.Run("reauth refused: "+tt.name, func(t *testing.T) {
			token, _ := mint(devKey, time.Hour)
			c, ca := connectV5(t, b.addr, testkit.JWTConnect("thermo-1", "", token))
			if ca.ReasonCode != 0 {
				t.Fatalf("CONNACK 0x%02X", ca.ReasonCode)
			}
			ar := reauth(t, c, "JWT", tt.token())
			if ar.Success || ar.ReasonCode != 0x87 || ar.Properties == nil || ar.Properties.ReasonString != string(tt.reason) {
				t.Fatalf("got success=%v 0x%02X %+v, want DISCONNECT 0x87 %q", ar.Success, ar.ReasonCode, ar.Properties, tt.reason)
			}
		})
	}
}

// BenchmarkDeviceVerify measures the CONNECT-path verification of a device token (client id parsing,
// provider selection, registry lookup, signature, claims) with 10 and 10,000 devices in registry_dir, against
// a bare jwt.Parse with the same key. The registry lookup is a map access, so the two sizes should match.
func BenchmarkDeviceVerify(b *testing.B) {
	for _, alg := range []string{"ES256", "RS256"} {
		key := testkit.NewKey(b, alg, "")
		pub := publicPEM(b, key)
		token := key.SignWithoutKID(b, deviceClaims(time.Now()))
		for _, n := range []int{10, 10_000} {
			dir := b.TempDir()
			for i := range n {
				if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("dev-%d.pem", i)), []byte(pub), 0o644); err != nil {
					b.Fatal(err)
				}
			}
			cfg := Config{Providers: []ProviderConfig{{Name: "fleet", Type: TypeDevices, Project: testProject, RegistryDir: dir}}}
			h, err := New(Options{Config: cfg, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				b.Fatal(err)
			}
			if got := len(h.ps().devices[0].registry.set.Load().byID); got != n {
				b.Fatalf("%d devices loaded, want %d", got, n)
			}
			_ = h.Stop() // stop the directory poller: this measures the CONNECT path alone (BenchmarkRegistrySweep is the poller)
			clientID := devicePath(testProject, fmt.Sprintf("dev-%d", n/2))
			b.Run(fmt.Sprintf("%s/devices=%d", alg, n), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := h.verify(token, "", clientID); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
		pk := key.Signer.Public()
		b.Run(alg+"/jwt.Parse", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := jwt.Parse(token, func(*jwt.Token) (any, error) { return pk, nil }); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/idmq/idmq/broker"
	"github.com/idmq/idmq/internal/testkit"
)

const testProject = "client-test"

// startBroker runs a real idmq broker in-process with a devices provider holding key as device dev-1, and
// returns its MQTT address.
func startBroker(t *testing.T, key testkit.Key) string {
	t.Helper()
	pubFile := filepath.Join(t.TempDir(), "dev-1.pem")
	if err := os.WriteFile(pubFile, key.PublicPEM(t), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := broker.Parse([]byte(fmt.Sprintf(`
data_dir: %s
listeners: [{type: tcp, address: "127.0.0.1:0"}]
http: {address: "127.0.0.1:0"}
storage: {type: memory}
auth:
  providers:
    - {name: fleet, type: devices, project: %s, devices: [{id: dev-1, keys: [{file: %s}]}]}
acl: {rules: [{topic: "/devices/%%u/#", access: pubsub}]}
`, t.TempDir(), testProject, pubFile)), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b, err := broker.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	return b.Addresses()["tcp0"]
}

// newKey is a device key: P-256, the curve DeviceToken signs ES256 with.
func newKey(t *testing.T) testkit.Key { return testkit.NewKey(t, "ES256", "") }

func TestConfigErrorsNameTheField(t *testing.T) {
	ok := Config{Brokers: []string{"tcp://127.0.0.1:1883"}, ClientID: "dev-1", Token: DeviceToken(nil, "p", "", time.Hour)}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no brokers", func(c *Config) { c.Brokers = nil }, "Config.Brokers: no broker URL"},
		{"mqtt scheme", func(c *Config) { c.Brokers = []string{"mqtt://h:1883"} }, "Config.Brokers[0]"},
		{"no host", func(c *Config) { c.Brokers = []string{"tcp://"} }, "Config.Brokers[0]"},
		{"no client id", func(c *Config) { c.ClientID = "" }, "Config.ClientID: empty"},
		{"no token source", func(c *Config) { c.Token = nil }, "Config.Token"},
		{"negative refresh", func(c *Config) { c.RefreshBefore = -time.Second }, "Config.RefreshBefore: negative"},
		{"min over max", func(c *Config) { c.BackoffMin, c.BackoffMax = time.Minute, time.Second }, "Config.BackoffMin"},
		{"keepalive too long", func(c *Config) { c.KeepAlive = 24 * time.Hour }, "Config.KeepAlive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ok
			tc.edit(&cfg)
			_, err := Connect(context.Background(), cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestReasonErrorIs(t *testing.T) {
	for _, tc := range []struct {
		err           ReasonError
		auth, expired bool
	}{
		{ReasonError{Packet: "CONNACK", Code: 0x86}, true, false},
		{ReasonError{Packet: "CONNACK", Code: 0x87}, true, false},
		{ReasonError{Packet: "CONNACK", Code: 0x8C}, true, false},
		{ReasonError{Packet: "CONNACK", Code: 0x88}, false, false}, // server unavailable
		{ReasonError{Packet: "CONNACK", Code: 0x9F}, false, false}, // connection rate exceeded
		{ReasonError{Packet: "DISCONNECT", Code: 0x87}, true, false},
		{ReasonError{Packet: "DISCONNECT", Code: 0x82, Reauth: true}, true, false},
		{ReasonError{Packet: "DISCONNECT", Code: 0x82}, false, false},
		{ReasonError{Packet: "DISCONNECT", Code: 0x8B}, false, false}, // server shutting down
		{ReasonError{Packet: "DISCONNECT", Code: 0xA0}, false, true},
		{ReasonError{Packet: "PUBACK", Code: 0x87}, false, false}, // the ACL, not the credentials
	} {
		t.Run(tc.err.Error(), func(t *testing.T) {
			err := fmt.Errorf("wrapped: %w", &tc.err)
			if errors.Is(err, ErrAuth) != tc.auth || errors.Is(err, ErrTokenExpired) != tc.expired {
				t.Fatalf("Is(ErrAuth) = %v, Is(ErrTokenExpired) = %v; want %v, %v",
					errors.Is(err, ErrAuth), errors.Is(err, ErrTokenExpired), tc.auth, tc.expired)
			}
		})
	}
}

// TestConnectTokenSourceFails: a token source that fails, or yields something the client cannot schedule a
// refresh for, makes Connect return a *TokenError at once, not after the caller's deadline.
func TestConnectTokenSourceFails(t *testing.T) {
	addr := startBroker(t, newKey(t))
	vaultDown := errors.New("vault: connection refused")
	for _, tc := range []struct {
		name   string
		source TokenSource
		want   string
	}{
		{"source error", func(context.Context) (string, error) { return "", vaultDown }, "vault: connection refused"},
		{"opaque token", func(context.Context) (string, error) { return "opaque", nil }, "not a JWT"},
		{"no exp", func(context.Context) (string, error) { return unsignedJWT(`{"aud":"x"}`), nil }, "no exp claim"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			start := time.Now()
			_, err := Connect(ctx, Config{Brokers: []string{"tcp://" + addr}, ClientID: "dev-1", Token: tc.source})
			var tokenErr *TokenError
			if !errors.As(err, &tokenErr) || !strings.Contains(err.Error(), tc.want) || errors.Is(err, ErrAuth) {
				t.Fatalf("Connect: %v, want a *TokenError containing %q", err, tc.want)
			}
			if tc.name == "source error" && !errors.Is(err, vaultDown) {
				t.Fatalf("the source's error is not wrapped: %v", err)
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Fatalf("took %s: retried", took)
			}
		})
	}
}

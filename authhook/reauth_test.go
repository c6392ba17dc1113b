package authhook

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/idmq/idmq/internal/testkit"
)

// identityChanges counts Options.OnIdentityChange calls per client id.
type identityChanges struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *identityChanges) record(cl *mqtt.Client) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[cl.ID]++
}

func (c *identityChanges) count(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[id]
}

func reauth(t testing.TB, c *testkit.V5Client, method, token string) *paho.AuthResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ar, err := c.Authenticate(ctx, &paho.Auth{ReasonCode: 0x19, Properties: &paho.AuthProperties{AuthMethod: method, AuthData: []byte(token)}})
	if err != nil {
		t.Fatalf("re-authentication: %v", err)
	}
	return ar
}

// A client that re-authenticates every second with 2 s tokens outlives all of them and keeps receiving.
func TestReauthKeepsConnectionAlive(t *testing.T) {
	changes := &identityChanges{}
	b := startBrokerWith(t, Options{Config: localConfig(), OnIdentityChange: changes.record}, &allowAllACL{})
	token, firstDeadline := mintLocal(t, b.hook, "alice", 2*time.Second, map[string]string{"plan": "free"})
	c, ca := connectV5(t, b.addr, testkit.JWTConnect("refresher", "", token))
	if ca.ReasonCode != 0 {
		t.Fatalf("CONNACK 0x%02X", ca.ReasonCode)
	}
	ctx := context.Background()
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "news/#", QoS: 0}}}); err != nil {
		t.Fatal(err)
	}
	ptoken, _ := mintLocal(t, b.hook, "publisher", time.Hour, nil)
	pub, ca := connectV5(t, b.addr, passwordConnect("publisher", "", ptoken))
	if ca.ReasonCode != 0 {
		t.Fatalf("publisher CONNACK 0x%02X", ca.ReasonCode)
	}
	stop := make(chan struct{})
	var published atomic.Int64
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if _, err := pub.Publish(ctx, &paho.Publish{Topic: "news/today", Payload: []byte("hello")}); err == nil {
					published.Add(1)
				}
			}
		}
	}()
	defer close(stop)

	start := time.Now()
	rounds := 0
	for time.Since(start) < 10*time.Second {
		got := countFor(c, time.Second)
		if got == 0 {
			t.Fatalf("no message in the second after round %d (%s in)", rounds, time.Since(start).Round(time.Millisecond))
		}
		c.NoDisconnect(t, 0)
		fresh, _ := mintLocal(t, b.hook, "alice", 2*time.Second, map[string]string{"plan": "pro"})
		if ar := reauth(t, c, "JWT", fresh); !ar.Success || ar.ReasonCode != 0 {
			t.Fatalf("round %d: AUTH 0x%02X success=%v", rounds, ar.ReasonCode, ar.Success)
		}
		rounds++
	}
	if time.Now().Before(firstDeadline.Add(5 * time.Second)) {
		t.Fatal("the test did not outlive the first token")
	}
	cl, _ := b.server.Clients.Get("refresher")
	id, ok := b.hook.Identity(cl)
	if !ok || id.Attributes["plan"] != "pro" || id.AuthMethod != "JWT" || time.Until(id.ExpiresAt) > 2*time.Second {
		t.Fatalf("identity after re-authentication = %+v", id)
	}
	if got := changes.count("refresher"); got != rounds {
		t.Fatalf("OnIdentityChange called %d times for %d re-authentications", got, rounds)
	}
	if cl.Properties.Props.AuthenticationData != nil {
		t.Fatal("Authentication Data kept on the client")
	}
	t.Logf("%d re-authentications over %s, %d messages published", rounds, time.Since(start).Round(time.Millisecond), published.Load())
}

func TestReauthRefused(t *testing.T) {
	changes := &identityChanges{}
	b := startBrokerWith(t, Options{Config: localConfig(), OnIdentityChange: changes.record})
	tests := []struct {
		name     string
		connect  func(token string) *paho.Connect
		method   string
		token    func() string
		code     byte
		reasonIs string
	}{
		{name: "another user's token", connect: func(tok string) *paho.Connect { return testkit.JWTConnect("r-other", "", tok) }, method: "JWT",
			token: func() string { tok, _ := mintLocal(t, b.hook, "mallory", time.Hour, nil); return tok },
			code:  0x87, reasonIs: string(ReasonUsernameMismatch)},
		{name: "bad token", connect: func(tok string) *paho.Connect { return testkit.JWTConnect("r-bad", "", tok) }, method: "JWT",
			token: func() string { return "not.a.token" }, code: 0x87, reasonIs: string(ReasonMalformed)},
		{name: "expired token", connect: func(tok string) *paho.Connect { return testkit.JWTConnect("r-expired", "", tok) }, method: "JWT",
			token: func() string {
				past := *b.hook.LocalIssuer() // same key, an hour ago
				past.now = func() time.Time { return time.Now().Add(-time.Hour) }
				tok, err := past.Mint("alice", time.Minute, nil, TopicGrants{})
				if err != nil {
					t.Fatal(err)
				}
				return tok
			}, code: 0x87, reasonIs: string(ReasonTokenExpired)},
		{name: "another method", connect: func(tok string) *paho.Connect { return testkit.JWTConnect("r-method", "", tok) }, method: "OAUTH2-JWT",
			token: func() string { tok, _ := mintLocal(t, b.hook, "alice", time.Hour, nil); return tok },
			code:  0x82, reasonIs: string(ReasonBadAuthMethod)},
		{name: "connection used the password field", connect: func(tok string) *paho.Connect { return passwordConnect("r-password", "", tok) }, method: "JWT",
			token: func() string { tok, _ := mintLocal(t, b.hook, "alice", time.Hour, nil); return tok },
			code:  0x82, reasonIs: string(ReasonBadAuthMethod)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			first, _ := mintLocal(t, b.hook, "alice", time.Hour, map[string]string{"plan": "free"})
			cp := tt.connect(first)
			c, ca := connectV5(t, b.addr, cp)
			if ca.ReasonCode != 0 {
				t.Fatalf("CONNACK 0x%02X", ca.ReasonCode)
			}
			cl, _ := b.server.Clients.Get(cp.ClientID)
			before, _ := b.hook.Identity(cl)
			ar := reauth(t, c, tt.method, tt.token())
			if ar.Success || ar.ReasonCode != tt.code || ar.Properties == nil || ar.Properties.ReasonString != tt.reasonIs {
				t.Fatalf("got success=%v 0x%02X %+v, want DISCONNECT 0x%02X %q", ar.Success, ar.ReasonCode, ar.Properties, tt.code, tt.reasonIs)
			}
			testkit.Eventually(t, 10*time.Second, cl.Closed, "the client was not closed")
			if changes.count(cp.ClientID) != 0 {
				t.Fatal("OnIdentityChange called for a refused re-authentication")
			}
			if after, ok := b.hook.Identity(cl); ok && after != before {
				t.Fatalf("identity replaced by a refused re-authentication: %+v", after)
			}
		})
	}
	logs := b.logs.String()
	if strings.Contains(logs, "eyJ") {
		t.Fatalf("a token leaked into the logs:\n%s", logs)
	}
}

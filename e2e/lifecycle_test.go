package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/idmq/idmq/internal/testkit"
)

const lifecycleConfig = `
listeners: [{type: tcp, address: "127.0.0.1:{{tcp}}"}]
http:
  address: "127.0.0.1:{{http}}"
  admin_keys: ["admin-key-0123456789abcdef"]
auth:
  leeway: 1s
  providers: [{name: local, type: local, attributes: [role]}]
acl:
  rules:
    - {topic: "#", access: pubsub, when: {role: admin}}
    - {topic: "users/%u/#", access: pubsub}
`

// TestSessionsEndWhenTokensEnd: at exp + leeway a v5 client gets DISCONNECT 0xA0 "token expired", a 3.1.1
// client's connection closes, and each one's Will reaches a subscriber.
func TestSessionsEndWhenTokensEnd(t *testing.T) {
	p := newIdmq(t, lifecycleConfig)
	p.start()
	watcher := newCollectV3()
	w, _ := connectV3(t, v3Options(p.brokerURL("tcp"), "watcher", "alice", p.token("alice"), nil))
	waitToken(t, w.Subscribe("users/alice/will/#", 1, watcher.handler), "subscribe")

	short := p.token("alice", "--ttl", "2s")
	due := tokenExpiry(t, short).Add(time.Second) // exp + auth.leeway
	v5, _ := connectV5(t, dialV5(t, p, "tcp", nil), &paho.Connect{ClientID: "short-v5", CleanStart: true,
		Username: "alice", UsernameFlag: true, Password: []byte(short), PasswordFlag: true,
		WillMessage: &paho.WillMessage{Topic: "users/alice/will/v5", QoS: 1, Payload: []byte("v5 gone")}})
	closed3 := make(chan time.Time, 1)
	o3 := v3Options(p.brokerURL("tcp"), "short-v3", "alice", short, nil).SetWill("users/alice/will/v3", "v3 gone", 1, false)
	o3.SetConnectionLostHandler(func(mqtt3.Client, error) { closed3 <- time.Now() })
	connectV3(t, o3)

	// Within 1 s after exp + leeway, and not before it.
	latest := due.Add(time.Second)
	d := v5.NextDisconnect(t, 8*time.Second)
	if d.ReasonCode != 0xA0 || d.Properties == nil || d.Properties.ReasonString != "token expired" {
		t.Fatalf("v5 DISCONNECT 0x%02x %+v, want 0xA0 \"token expired\"", d.ReasonCode, d.Properties)
	}
	if d.At.After(latest) || d.At.Before(due) {
		t.Fatalf("v5 disconnected %s after exp + leeway", d.At.Sub(due))
	}
	select {
	case at := <-closed3:
		if at.After(latest) || at.Before(due) {
			t.Fatalf("v3 connection closed %s after exp + leeway", at.Sub(due))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("v3 connection not closed at expiry")
	}
	wills := map[string]int{}
	deadline := time.After(5 * time.Second)
	for len(wills) < 2 {
		select {
		case m := <-watcher.ch:
			wills[m.Topic()]++
		case <-deadline:
			t.Fatalf("wills received: %v, want users/alice/will/v5 and users/alice/will/v3", wills)
		}
	}
	select { // and each exactly once
	case m := <-watcher.ch:
		t.Fatalf("a Will arrived twice: %s", m.Topic())
	case <-time.After(500 * time.Millisecond):
	}
}

// tokenExpiry reads exp from a JWT's payload (no verification: the test minted it).
func tokenExpiry(t *testing.T, token string) time.Time {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", token)
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		Exp int64 `json:"exp"`
	}
	if err := json.Unmarshal(raw, &claims); err != nil {
		t.Fatal(err)
	}
	return time.Unix(claims.Exp, 0)
}

// TestReauthenticationKeepsAClientConnected: a v5 client that refreshes its 2 s token every second over
// AUTH stays connected for 10 s and keeps receiving; a token with more rights widens its ACL in place.
func TestReauthenticationKeepsAClientConnected(t *testing.T) {
	p := newIdmq(t, lifecycleConfig)
	p.start()
	c, ca := connectV5(t, dialV5(t, p, "tcp", nil), testkit.JWTConnect("refresher", "", p.token("alice", "--ttl", "3s")))
	if c == nil {
		t.Fatalf("CONNACK 0x%02x", ca.ReasonCode)
	}
	if _, err := c.Subscribe(context.Background(), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "users/alice/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	pub, _ := connectV3(t, v3Options(p.brokerURL("tcp"), "pub", "alice", p.token("alice"), nil))
	end := time.Now().Add(10 * time.Second)
	for i := 0; time.Now().Before(end); i++ {
		fresh := p.token("alice", "--ttl", "2s")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ar, err := c.Authenticate(ctx, &paho.Auth{ReasonCode: 0x19, Properties: &paho.AuthProperties{AuthMethod: "JWT", AuthData: []byte(fresh)}})
		cancel()
		if err != nil || !ar.Success {
			t.Fatalf("re-authentication %d: %+v %v", i, ar, err)
		}
		topic := fmt.Sprintf("users/alice/tick/%d", i)
		waitToken(t, pub.Publish(topic, 1, false, "tick"), "publish")
		c.Expect(t, topic, 5*time.Second)
		time.Sleep(time.Second)
	}
	c.NoDisconnect(t, 0) // while refreshing

	// Before: bob's topics are out of reach. After re-authenticating with an admin token: allowed.
	pr, _ := c.Publish(context.Background(), &paho.Publish{Topic: "users/bob/x", QoS: 1, Payload: []byte("x")})
	if pr == nil || pr.ReasonCode != 0x87 {
		t.Fatalf("publish to bob before: %+v, want 0x87", pr)
	}
	ar, err := c.Authenticate(context.Background(), &paho.Auth{ReasonCode: 0x19, Properties: &paho.AuthProperties{AuthMethod: "JWT",
		AuthData: []byte(p.token("alice", "--ttl", "1m", "--claim", "role=admin"))}})
	if err != nil || !ar.Success {
		t.Fatalf("re-authentication as admin: %+v %v", ar, err)
	}
	pr, _ = c.Publish(context.Background(), &paho.Publish{Topic: "users/bob/x", QoS: 1, Payload: []byte("x")})
	if pr == nil || pr.ReasonCode != 0 {
		t.Fatalf("publish to bob after re-authenticating as admin: %+v, want success", pr)
	}

	// Another user's token: DISCONNECT 0x87.
	_, _ = c.Authenticate(context.Background(), &paho.Auth{ReasonCode: 0x19, Properties: &paho.AuthProperties{AuthMethod: "JWT", AuthData: []byte(p.token("mallory"))}})
	if d := c.NextDisconnect(t, 5*time.Second); d.ReasonCode != 0x87 {
		t.Fatalf("re-auth as another user: DISCONNECT 0x%02x, want 0x87", d.ReasonCode)
	}
}

// TestPersistentSessionSurvivesExpiry: the session outlives the token; a fresh token resumes it with what
// was queued while away.
func TestPersistentSessionSurvivesExpiry(t *testing.T) {
	p := newIdmq(t, lifecycleConfig)
	p.start()
	lost := make(chan struct{}, 1)
	o := v3Options(p.brokerURL("tcp"), "keeper", "alice", p.token("alice", "--ttl", "2s"), nil).SetCleanSession(false)
	o.SetConnectionLostHandler(func(mqtt3.Client, error) { lost <- struct{}{} })
	c, _ := connectV3(t, o)
	waitToken(t, c.Subscribe("users/alice/queue", 1, nil), "subscribe")
	select {
	case <-lost:
	case <-time.After(8 * time.Second):
		t.Fatal("not disconnected at expiry")
	}
	pub, _ := connectV3(t, v3Options(p.brokerURL("tcp"), "pub", "alice", p.token("alice"), nil))
	waitToken(t, pub.Publish("users/alice/queue", 1, false, "while away"), "publish")
	got := newCollectV3()
	o = v3Options(p.brokerURL("tcp"), "keeper", "alice", p.token("alice"), nil).SetCleanSession(false)
	o.SetDefaultPublishHandler(got.handler)
	connectV3(t, o)
	if m := got.expect(t, "users/alice/queue", 5*time.Second); string(m.Payload()) != "while away" {
		t.Fatalf("got %q", m.Payload())
	}
}

func (p *idmqProc) admin(t *testing.T, method, path, key, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+p.addr("http")+path, strings.NewReader(body))
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := map[string]any{}
	_ = json.Unmarshal(b, &out)
	return resp.StatusCode, out
}

func (p *idmqProc) mustGet(t *testing.T, path string) string {
	_, body := p.get(path)
	return body
}

func TestAdminAPIAndRevocationSurvivesRestart(t *testing.T) {
	p := newIdmq(t, lifecycleConfig)
	p.start()
	const key = "admin-key-0123456789abcdef"
	if code, body := p.admin(t, "GET", "/v1/clients", "", ""); code != 401 || body["error"] != "unauthorized" {
		t.Fatalf("without a key: %d %v", code, body)
	}
	if code, body := p.admin(t, "GET", "/v1/clients", "wrong-key-0123456789abcdef", ""); code != 403 || body["error"] != "forbidden" {
		t.Fatalf("wrong key: %d %v", code, body)
	}

	alice, _ := connectV5(t, dialV5(t, p, "tcp", nil), testkit.JWTConnect("alice-phone", "alice", p.token("alice")))
	code, body := p.admin(t, "GET", "/v1/clients", key, "")
	clients, _ := body["clients"].([]any)
	if code != 200 || len(clients) != 1 {
		t.Fatalf("list: %d %v", code, body)
	}
	c0 := clients[0].(map[string]any)
	if c0["client_id"] != "alice-phone" || c0["username"] != "alice" || c0["provider"] != "local" || c0["expires_at"] == nil || c0["connected_at"] == nil {
		t.Fatalf("client entry %v", c0)
	}
	if code, _ := p.admin(t, "DELETE", "/v1/clients/alice-phone", key, ""); code != 200 {
		t.Fatalf("delete: %d", code)
	}
	if d := alice.NextDisconnect(t, 5*time.Second); d.ReasonCode != 0x98 { // the admin's disconnect
		t.Fatalf("DISCONNECT 0x%02x, want 0x98", d.ReasonCode)
	}
	if code, _ := p.admin(t, "DELETE", "/v1/clients/alice-phone", key, ""); code != 404 {
		t.Fatalf("delete of a gone client: %d", code)
	}

	bobToken := p.token("bob")
	bob, _ := connectV5(t, dialV5(t, p, "tcp", nil), testkit.JWTConnect("bob-1", "bob", bobToken))
	if code, body := p.admin(t, "POST", "/v1/revocations", key, `{"username": "bob"}`); code != 200 || body["disconnected"] != float64(1) {
		t.Fatalf("revoke: %d %v", code, body)
	}
	bob.NextDisconnect(t, 5*time.Second) // the revoked user's
	refused := func(when string) {
		t.Helper()
		c, ca := connectV5(t, dialV5(t, p, "tcp", nil), testkit.JWTConnect("bob-2", "bob", bobToken))
		if c != nil || ca.ReasonCode != 0x86 {
			t.Fatalf("%s: revoked token CONNACK %+v, want 0x86", when, ca)
		}
	}
	refused("before restart")
	if code := p.stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
	p.start()
	refused("after restart")
	if code, body := p.admin(t, "GET", "/v1/revocations", key, ""); code != 200 || !strings.Contains(fmt.Sprint(body), "bob") {
		t.Fatalf("revocations after restart: %d %v", code, body)
	}
	time.Sleep(1100 * time.Millisecond) // a token issued in a later second than the revocation
	if c, ca := connectV5(t, dialV5(t, p, "tcp", nil), testkit.JWTConnect("bob-3", "bob", p.token("bob"))); c == nil {
		t.Fatalf("a token issued after the revocation: CONNACK 0x%02x", ca.ReasonCode)
	}
}

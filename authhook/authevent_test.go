package authhook

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/idmq/idmq/internal/testkit"
)

// authEvents records Options.OnAuthEvent calls.
type authEvents struct {
	mu  sync.Mutex
	got []AuthEvent
}

func (a *authEvents) record(e AuthEvent) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.got = append(a.got, e)
}

func (a *authEvents) kinds(clientID string) []AuthEventKind {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []AuthEventKind
	for _, e := range a.got {
		if e.Client != nil && e.Client.ID == clientID {
			out = append(out, e.Kind)
		}
	}
	return out
}

func (a *authEvents) last() AuthEvent {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.got[len(a.got)-1]
}

// OnAuthEvent hears of a refused CONNECT, a refresh, a refused re-authentication, an expiry and a
// revocation, each with who and which code was sent, and no credential.
func TestOnAuthEvent(t *testing.T) {
	ev := &authEvents{}
	b := startBrokerWith(t, Options{Config: localConfig(), OnAuthEvent: ev.record}, &allowAllACL{})

	_, ca := connectV5(t, b.addr, testkit.JWTConnect("bad", "", "not-a-jwt"))
	if ca.ReasonCode == 0 {
		t.Fatal("a garbage token connected")
	}
	if e := ev.last(); e.Kind != AuthRefused || e.Identity != nil || e.Reason != ReasonMalformed || e.Code.Code != ca.ReasonCode || e.Client.ID != "bad" {
		t.Fatalf("refused CONNECT: %+v (code 0x%02X), CONNACK 0x%02X", e, e.Code.Code, ca.ReasonCode)
	}

	token, _ := mintLocal(t, b.hook, "alice", time.Hour, nil)
	c, _ := connectV5(t, b.addr, testkit.JWTConnect("alice-1", "", token))
	short, _ := mintLocal(t, b.hook, "alice", time.Second, nil)
	if ar := reauth(t, c, "JWT", short); !ar.Success {
		t.Fatalf("AUTH 0x%02X", ar.ReasonCode)
	}
	if e := ev.last(); e.Kind != TokenRefreshed || e.Identity.Username != "alice" || e.Provider != "local" {
		t.Fatalf("refresh: %+v", e)
	}
	if d := c.NextDisconnect(t, 5*time.Second); d.ReasonCode != 0xA0 {
		t.Fatalf("DISCONNECT 0x%02X, want 0xA0", d.ReasonCode)
	}
	if e := ev.last(); e.Kind != TokenExpired || e.Code.Code != 0xA0 || e.Identity.Username != "alice" {
		t.Fatalf("expiry: %+v", e)
	}

	c, _ = connectV5(t, b.addr, testkit.JWTConnect("alice-2", "", token))
	bob, _ := mintLocal(t, b.hook, "bob", time.Hour, nil)
	_ = reauth(t, c, "JWT", bob)
	if d := c.NextDisconnect(t, 5*time.Second); d.ReasonCode != 0x87 {
		t.Fatalf("DISCONNECT 0x%02X, want 0x87", d.ReasonCode)
	}
	if e := ev.last(); e.Kind != AuthRefused || e.Identity.Username != "alice" || e.Reason != ReasonUsernameMismatch || e.Code.Code != 0x87 {
		t.Fatalf("refused re-authentication: %+v", e)
	}

	c, _ = connectV5(t, b.addr, testkit.JWTConnect("alice-3", "", token))
	if n, err := b.hook.Revoke(Revocation{Username: "alice"}); n != 1 || err != nil {
		t.Fatalf("Revoke = %d, %v", n, err)
	}
	if d := c.NextDisconnect(t, 5*time.Second); d.ReasonCode != 0x98 {
		t.Fatalf("DISCONNECT 0x%02X, want 0x98", d.ReasonCode)
	}
	if e := ev.last(); e.Kind != CredentialsRevoked || e.Code.Code != 0x98 || e.Identity.Username != "alice" {
		t.Fatalf("revocation: %+v", e)
	}
	if _, err := b.hook.Revoke(Revocation{Username: "alice"}); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string][]AuthEventKind{
		"alice-1": {TokenRefreshed, TokenExpired},
		"alice-2": {AuthRefused},
		"alice-3": {CredentialsRevoked}, // once: a second revocation finds it already ended
	} {
		if got := ev.kinds(id); !slices.Equal(got, want) {
			t.Fatalf("%s: %v, want %v", id, got, want)
		}
	}
}

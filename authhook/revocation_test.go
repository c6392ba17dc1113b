package authhook

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/idmq/idmq/internal/testkit"
)

func TestRevokeUsername(t *testing.T) {
	clock := newFakeClock()
	b := startBrokerWith(t, Options{Config: localConfig(), Now: clock.Now})
	aliceToken, _ := mintLocal(t, b.hook, "alice", time.Hour, nil)
	bobToken, _ := mintLocal(t, b.hook, "bob", time.Hour, nil)

	alice5, ca := connectV5(t, b.addr, testkit.JWTConnect("alice-v5", "", aliceToken))
	if ca.ReasonCode != 0 {
		t.Fatalf("CONNACK 0x%02X", ca.ReasonCode)
	}
	if code, _ := connectV3(t, b.addr, "alice-v3", "", aliceToken); code != 0 {
		t.Fatalf("v3 CONNACK 0x%02X", code)
	}
	bob, ca := connectV5(t, b.addr, testkit.JWTConnect("bob-v5", "", bobToken))
	if ca.ReasonCode != 0 {
		t.Fatalf("CONNACK 0x%02X", ca.ReasonCode)
	}

	cl3, _ := b.server.Clients.Get("alice-v3")
	clock.Add(time.Second)
	n, err := b.hook.Revoke(Revocation{Username: "alice"})
	if err != nil || n != 2 {
		t.Fatalf("Revoke = %d, %v; want 2 clients disconnected", n, err)
	}
	if td := alice5.NextDisconnect(t, 3*time.Second); td.ReasonCode != 0x98 || td.Properties == nil || td.Properties.ReasonString != revokedReason {
		t.Fatalf("DISCONNECT 0x%02X %+v, want 0x98 %q", td.ReasonCode, td.Properties, revokedReason)
	}
	testkit.Eventually(t, 10*time.Second, cl3.Closed, "the client was not closed")
	bob.NoDisconnect(t, 100*time.Millisecond)

	// The old credential is in the verified-token cache; it is refused all the same.
	if _, ca := connectV5(t, b.addr, passwordConnect("alice-again", "", aliceToken)); ca.ReasonCode != 0x86 || ca.Properties.ReasonString != string(ReasonTokenRevoked) {
		t.Fatalf("revoked credential: CONNACK 0x%02X %q, want 0x86 token_revoked", ca.ReasonCode, ca.Properties.ReasonString)
	}
	if code, _ := connectV3(t, b.addr, "alice-again-v3", "", aliceToken); code != 0x04 {
		t.Fatalf("revoked credential, v3: 0x%02X, want 0x04", code)
	}
	// A credential issued after the revocation is accepted.
	clock.Add(time.Second)
	fresh, _ := mintLocal(t, b.hook, "alice", time.Hour, nil)
	if _, ca := connectV5(t, b.addr, passwordConnect("alice-fresh", "", fresh)); ca.ReasonCode != 0 {
		t.Fatalf("fresh credential: CONNACK 0x%02X %q", ca.ReasonCode, ca.Properties.ReasonString)
	}
	// Other users are not affected.
	if _, ca := connectV5(t, b.addr, passwordConnect("bob-2", "", bobToken)); ca.ReasonCode != 0 {
		t.Fatalf("bob: 0x%02X", ca.ReasonCode)
	}
}

func TestRevokeUsernameRefusesTokensWithoutIAT(t *testing.T) {
	clock := newFakeClock()
	key := testkit.NewKey(t, "ES256", "ec-1")
	idp := testkit.NewIdP(t, key)
	h, err := New(Options{Config: oidcConfig(idp.Issuer()), Now: clock.Now, DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Stop()
	waitReady(t, h)
	noIAT := baseClaims(idp.Issuer())(clock.Now())
	delete(noIAT, "iat")
	tests := []struct {
		name  string
		token string
		want  Reason
	}{
		{name: "no iat", token: key.Sign(t, noIAT), want: ReasonTokenRevoked},
		{name: "issued before", token: key.Sign(t, baseClaims(idp.Issuer())(clock.Now())), want: ReasonTokenRevoked},
		{name: "issued after", token: key.Sign(t, baseClaims(idp.Issuer())(clock.Now().Add(2*time.Second))), want: ""},
	}
	if _, err := h.Revoke(Revocation{Username: "alice"}); err != nil {
		t.Fatal(err)
	}
	clock.Add(2 * time.Second)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := h.Verify(context.Background(), tt.token, ""); ReasonOf(err) != tt.want {
				t.Fatalf("err = %v, want reason %q", err, tt.want)
			}
		})
	}
}

func TestRevokeTokenID(t *testing.T) {
	clock := newFakeClock()
	b := startBrokerWith(t, Options{Config: localConfig(), Now: clock.Now})
	stolen, _ := mintLocal(t, b.hook, "carol", time.Hour, nil)
	other, _ := mintLocal(t, b.hook, "carol", time.Hour, nil)
	c1, _ := connectV5(t, b.addr, testkit.JWTConnect("carol-1", "", stolen))
	c2, _ := connectV5(t, b.addr, testkit.JWTConnect("carol-2", "", other))
	id, err := b.hook.Verify(context.Background(), stolen, "") // served from the cache
	if err != nil {
		t.Fatal(err)
	}
	n, err := b.hook.Revoke(Revocation{TokenID: id.TokenID})
	if err != nil || n != 1 {
		t.Fatalf("Revoke = %d, %v; want 1", n, err)
	}
	if td := c1.NextDisconnect(t, 3*time.Second); td.ReasonCode != 0x98 { // the connection with the revoked token
		t.Fatalf("DISCONNECT 0x%02X", td.ReasonCode)
	}
	c2.NoDisconnect(t, 100*time.Millisecond) // another token of the same user
	if _, err := b.hook.Verify(context.Background(), stolen, ""); ReasonOf(err) != ReasonTokenRevoked {
		t.Fatalf("revoked jti: %v", err)
	}
	if _, err := b.hook.Verify(context.Background(), other, ""); err != nil {
		t.Fatalf("another jti: %v", err)
	}
	// Re-authenticating with it is refused too.
	ar := reauth(t, c2, "JWT", stolen)
	if ar.Success || ar.ReasonCode != 0x87 || ar.Properties.ReasonString != string(ReasonTokenRevoked) {
		t.Fatalf("re-auth with a revoked token: success=%v 0x%02X %+v", ar.Success, ar.ReasonCode, ar.Properties)
	}
}

func TestRevocationsPersistAndExpire(t *testing.T) {
	clock := newFakeClock()
	dir := t.TempDir()
	h1 := newLocalHook(t, dir, clock.Now)
	li := *h1.LocalIssuer()
	oldIssuer := &li
	oldIssuer.now = func() time.Time { return clock.Now().Add(-time.Minute) }
	// Valid longer than the retention, so only the revocation refuses it.
	longLived, err := oldIssuer.Mint("dave", 30*24*time.Hour, nil, TopicGrants{})
	if err != nil {
		t.Fatal(err)
	}
	jtiToken, _ := oldIssuer.Mint("erin", 30*24*time.Hour, nil, TopicGrants{})
	jid, err := h1.Verify(context.Background(), jtiToken, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []Revocation{{Username: "dave"}, {TokenID: jid.TokenID}} {
		if _, err := h1.Revoke(r); err != nil {
			t.Fatal(err)
		}
	}
	info, err := os.Stat(filepath.Join(dir, revocationsFileName))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("revocations file: %v %v, want mode 0600", info, err)
	}

	tests := []struct {
		name    string
		after   time.Duration
		listed  int
		revoked bool
	}{
		{name: "after a restart", after: time.Hour, listed: 2, revoked: true},
		{name: "just inside the retention", after: defaultRevocationRetention - time.Second, listed: 2, revoked: true},
		{name: "past the retention", after: defaultRevocationRetention + time.Second, listed: 0, revoked: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			at := clock.Now().Add(tt.after)
			h2 := newLocalHook(t, dir, func() time.Time { return at })
			if got := h2.Revocations(); len(got) != tt.listed {
				t.Fatalf("Revocations() = %+v, want %d", got, tt.listed)
			}
			for _, tok := range []string{longLived, jtiToken} {
				_, err := h2.Verify(context.Background(), tok, "")
				if revoked := ReasonOf(err) == ReasonTokenRevoked; revoked != tt.revoked {
					t.Fatalf("revoked = %v (%v), want %v", revoked, err, tt.revoked)
				}
			}
		})
	}
	list := h1.Revocations()
	if len(list) != 2 || list[0].Username != "dave" || list[1].TokenID != jid.TokenID || !list[0].RevokedAt.Equal(clock.Now()) {
		t.Fatalf("Revocations() = %+v", list)
	}
}

func TestRevokeInvalid(t *testing.T) {
	h := newLocalHook(t, t.TempDir(), nil)
	tests := []struct {
		name string
		r    Revocation
	}{
		{name: "neither", r: Revocation{}},
		{name: "both", r: Revocation{Username: "a", TokenID: "b"}},
		{name: "too long", r: Revocation{Username: strings.Repeat("a", 2000)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := h.Revoke(tt.r); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	if got := h.Revocations(); len(got) != 0 {
		t.Fatalf("invalid revocations recorded: %+v", got)
	}
}

func TestRevocationsFileCorrupt(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, revocationsFileName)
	if err := os.WriteFile(path, []byte(`{"revocations": [{"username": "a", "jti": "b", "revoked_at": "2026-01-01T00:00:00Z"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := New(Options{Config: Config{Providers: []ProviderConfig{{Name: "local", Type: TypeLocal}}}, DataDir: dir})
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("New with a bad revocations file: %v", err)
	}
}

// With revocations in force the cache hit path still allocates nothing.
func TestCacheHitWithRevocationsAllocatesNothing(t *testing.T) {
	h := newLocalHook(t, t.TempDir(), nil)
	for _, r := range []Revocation{{Username: "someone-else"}, {TokenID: "another-jti"}} {
		if _, err := h.Revoke(r); err != nil {
			t.Fatal(err)
		}
	}
	token, _ := h.LocalIssuer().Mint("alice", time.Hour, nil, TopicGrants{})
	ctx := context.Background()
	if _, err := h.Verify(ctx, token, ""); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = h.Verify(ctx, token, "") }); n != 0 {
		t.Fatalf("cache hit allocates %v times", n)
	}
}

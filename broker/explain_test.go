package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/idmq/idmq/aclhook"
	"github.com/idmq/idmq/authhook"
	"github.com/idmq/idmq/internal/testkit"
)

// explainNow is the clock of the explain goldens: every time in them is relative to it.
var explainNow = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

type explainWorld struct {
	clerk, corp *testIdP
	dead        string
	devKey      testkit.Key
	auth        *authhook.Hook
	rules       *aclhook.Rules
}

// newExplainWorld is what `idmq explain` builds from a config: the providers (keys fetched over real HTTP),
// the rules; with a fixed clock.
func newExplainWorld(t *testing.T) *explainWorld {
	w := &explainWorld{clerk: newTestIdP(t), corp: newTestIdP(t)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w.dead = "http://" + ln.Addr().String()
	_ = ln.Close()
	key := testkit.NewKey(t, "RS256", "")
	w.devKey = key
	devPEM := writePublicPEM(t, t.TempDir(), "dev.pem", key)
	cfg, err := Parse([]byte(fmt.Sprintf(`
listeners: [{type: tcp, address: "127.0.0.1:0"}]
storage: {type: memory}
auth:
  providers:
    - {name: local, type: local}
    - name: clerk
      type: clerk
      issuer: %[1]s
      jwks_url: %[1]s/jwks
      authorized_parties: ["https://app.example.com"]
      claims:
        - {path: public_metadata.plan, attribute: plan, default: free}
        - {path: org_role, attribute: role}
        - {path: /public_metadata/roles, attribute: roles}
      topics_claim: mqtt_topics
    - name: corp
      type: oidc
      issuer: %[2]s
      jwks_url: %[2]s/jwks
      audiences: [mqtt]
      claims: [{path: org_id, attribute: org_id, required: true}]
    - {name: down, type: oidc, issuer: %[3]s, jwks_url: %[3]s/jwks}
    - name: fleet
      type: devices
      project: fleet-project
      devices: [{id: dev-1, keys: [{file: %[4]s}]}]
acl:
  rules:
    - {topic: "users/%%u/secret", access: deny}
    - {topic: "users/%%u/#", access: pubsub}
    - {topic: "plans/%%{plan}/news", access: subscribe}
    - {topic: "admin/#", access: pubsub, when: {role: admin}}
    - {topic: "devices/%%{device_id}/state", access: publish}
    - {topic: "orgs/%%{org_id}/#", access: subscribe}
    - {topic: "ops/#", access: subscribe, when: {roles: [ops, admin]}}
`, w.clerk.Issuer(), w.corp.Issuer(), w.dead, devPEM)), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w.auth, err = authhook.New(authhook.Options{Config: cfg.Auth, DataDir: t.TempDir(), Now: func() time.Time { return explainNow },
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.auth.Stop() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	w.auth.Check(ctx)
	if w.rules, err = aclhook.NewRules(cfg.ACL); err != nil {
		t.Fatal(err)
	}
	return w
}

// clerkToken is a Clerk session token for alice at explainNow, with edit applied (nil deletes a claim).
func (w *explainWorld) clerkToken(t *testing.T, edit jwt.MapClaims) string {
	c := jwt.MapClaims{"iss": w.clerk.Issuer(), "sub": "user_2abc", "email": "Alice+Ops@Example.com",
		"azp": "https://app.example.com", "public_metadata": map[string]any{"plan": "pro", "roles": []any{"dev", "ops"}},
		"mqtt_topics": map[string]any{"subscribe": []any{"news/#"}},
		"iat":         explainNow.Add(-10 * time.Second).Unix(), "exp": explainNow.Add(50 * time.Second).Unix()}
	for k, v := range edit {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return w.clerk.Key().Sign(t, c)
}

func (w *explainWorld) corpToken(t *testing.T, edit jwt.MapClaims) string {
	c := jwt.MapClaims{"iss": w.corp.Issuer(), "sub": "bob", "aud": "mqtt", "org_id": "acme",
		"iat": explainNow.Add(-time.Minute).Unix(), "exp": explainNow.Add(time.Hour).Unix()}
	for k, v := range edit {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return w.corp.Key().Sign(t, c)
}

func topics(specs ...string) []TopicRequest {
	var out []TopicRequest
	for _, s := range specs {
		out = append(out, ParseTopicRequest(s))
	}
	return out
}

// TestExplainGolden pins `idmq explain`'s output for the cases an operator meets: a good Clerk token and its
// topic decisions (by rule, by grant, by default deny), each refusal of the token exchange's error table, a
// device token, and an exchanged credential.
func TestExplainGolden(t *testing.T) {
	w := newExplainWorld(t)
	stranger := testkit.NewKey(t, "RS256", "k1")
	clerkID, err := w.auth.Verify(context.Background(), w.clerkToken(t, nil), "")
	if err != nil {
		t.Fatal(err)
	}
	exchanged, _, err := w.auth.LocalIssuer().MintCredential(clerkID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	revoked := w.corpToken(t, jwt.MapClaims{"jti": "stolen-1"})
	if _, err := w.auth.Revoke(authhook.Revocation{TokenID: "stolen-1"}); err != nil {
		t.Fatal(err)
	}
	devIat := explainNow.Add(-time.Minute)
	device := w.devKey.SignWithoutKID(t, jwt.MapClaims{"aud": "fleet-project", "iat": devIat.Unix(), "exp": devIat.Add(time.Hour).Unix()})
	devPath := "projects/fleet-project/locations/europe-west1/registries/walk/devices/dev-1"

	cases := []struct {
		name string
		req  ExplainRequest
	}{
		{"clerk_good", ExplainRequest{Token: w.clerkToken(t, nil), ClientID: "web-1", Username: "jwt", Topics: topics(
			"users/alice%2Bops@example.com/inbox:publish", "users/alice%2Bops@example.com/secret:subscribe",
			"plans/pro/news:subscribe", "plans/pro/news:publish", "news/today:subscribe", "admin/x", "ops/alerts:subscribe", "users/bob/x:subscribe")}},
		{"clerk_default_attribute", ExplainRequest{Token: w.clerkToken(t, jwt.MapClaims{"public_metadata": nil, "org_role": "admin", "mqtt_topics": nil}),
			Topics: topics("plans/free/news:subscribe", "admin/x:publish")}},
		{"malformed", ExplainRequest{Token: "not-a-jwt"}},
		{"issuer_mismatch", ExplainRequest{Token: w.clerkToken(t, jwt.MapClaims{"iss": "https://other.example.com"})}},
		{"token_expired", ExplainRequest{Token: w.clerkToken(t, jwt.MapClaims{"exp": explainNow.Add(-time.Minute).Unix()})}},
		{"token_not_yet_valid", ExplainRequest{Token: w.clerkToken(t, jwt.MapClaims{"nbf": explainNow.Add(time.Minute).Unix()})}},
		{"invalid_signature", ExplainRequest{Token: stranger.Sign(t, jwt.MapClaims{"iss": w.clerk.Issuer(), "sub": "x", "email": "x@example.com",
			"azp": "https://app.example.com", "iat": explainNow.Unix(), "exp": explainNow.Add(time.Minute).Unix()})}},
		{"unknown_kid", ExplainRequest{Token: testkit.Key{KID: "k9", Method: w.corp.Key().Method, Signer: w.corp.Key().Signer}.Sign(t, jwt.MapClaims{"iss": w.corp.Issuer(), "sub": "bob", "aud": "mqtt", "org_id": "acme",
			"iat": explainNow.Unix(), "exp": explainNow.Add(time.Minute).Unix()})}},
		{"invalid_audience", ExplainRequest{Token: w.corpToken(t, jwt.MapClaims{"aud": "another-api"})}},
		{"invalid_azp", ExplainRequest{Token: w.clerkToken(t, jwt.MapClaims{"azp": "https://evil.example.com"})}},
		{"missing_claim", ExplainRequest{Token: w.corpToken(t, jwt.MapClaims{"org_id": nil})}},
		{"provider_unavailable", ExplainRequest{Token: stranger.Sign(t, jwt.MapClaims{"iss": w.dead, "sub": "x",
			"iat": explainNow.Unix(), "exp": explainNow.Add(time.Minute).Unix()})}},
		{"token_revoked", ExplainRequest{Token: revoked}},
		{"username_mismatch", ExplainRequest{Token: w.corpToken(t, nil), Username: "alice"}},
		{"corp_rules", ExplainRequest{Token: w.corpToken(t, nil), ClientID: "bob-laptop", Topics: topics("orgs/acme/news:subscribe", "orgs/other/news:subscribe")}},
		{"device", ExplainRequest{Token: device, ClientID: devPath, Username: "unused", Topics: topics("devices/dev-1/state:publish", "devices/dev-2/state:publish")}},
		{"device_unknown", ExplainRequest{Token: device, ClientID: "dev-9"}},
		{"exchanged", ExplainRequest{Token: exchanged, ClientID: "web-2", Username: clerkID.Username, Topics: topics("plans/pro/news:subscribe", "news/x:subscribe")}},
		{"exchanged_wrong_username", ExplainRequest{Token: exchanged, Username: "jwt"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ex, err := Explain(w.auth, w.rules, tc.req)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			ex.WriteText(&buf)
			got := w.normalize(buf.String())
			if strings.Contains(buf.String(), tc.req.Token) {
				t.Fatal("the explanation contains the token")
			}
			golden := filepath.Join("testdata", "explain", tc.name+".golden")
			if *update {
				if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create)", err)
			}
			if got != string(want) {
				t.Errorf("explanation changed:\n--- got\n%s\n--- want\n%s", got, want)
			}
		})
	}
}

var (
	thumbprintRE  = regexp.MustCompile(`"[A-Za-z0-9_-]{43}"`)
	exchangeKIDRE = regexp.MustCompile(`"xc-[A-Za-z0-9_-]+"`)
	jtiRE         = regexp.MustCompile(`jti "[A-Za-z0-9_-]{22}"`)
)

// normalize replaces what differs between runs: the test servers' addresses, the local key's thumbprint and
// the exchange key id, and the random jti of minted credentials.
func (w *explainWorld) normalize(s string) string {
	s = strings.ReplaceAll(s, w.clerk.Issuer(), "http://CLERK")
	s = strings.ReplaceAll(s, w.corp.Issuer(), "http://CORP")
	s = strings.ReplaceAll(s, w.dead, "http://DOWN")
	s = strings.ReplaceAll(s, strings.TrimPrefix(w.dead, "http://"), "DOWN")
	s = exchangeKIDRE.ReplaceAllString(s, `"EXCHANGE-KID"`)
	s = thumbprintRE.ReplaceAllString(s, `"THUMBPRINT"`)
	return jtiRE.ReplaceAllString(s, `jti "JTI"`)
}

// TestExplainHTTP: POST /v1/explain answers with the running broker's state, as JSON, only to an admin key,
// and never repeats the token.
func TestExplainHTTP(t *testing.T) {
	idp := newTestIdP(t)
	const adminKey = "admin-key-0123456789"
	b, h := newTestBroker(t, idp, "  admin_keys: ["+adminKey+"]")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b.auth.Check(ctx)
	tok := idp.token(t, jwt.MapClaims{"org_id": "acme"})
	body := `{"token": "` + tok + `", "client_id": "c1", "topics": [{"topic": "users/alice@example.com/x", "action": "publish"}, {"topic": "users/bob/x", "action": "subscribe"}]}`

	if res := call(t, h, "POST", "/v1/explain", body, nil); res.status != 401 {
		t.Fatalf("without a key: status %d, want 401", res.status)
	}
	req := httptest.NewRequest("POST", "/v1/explain", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+adminKey)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	if strings.Contains(rec.Body.String(), tok) || strings.Contains(rec.Body.String(), strings.Split(tok, ".")[2]) {
		t.Fatal("the answer contains the token")
	}
	var got struct {
		Provider string
		Identity struct{ Username string }
		ACL      struct {
			Topics []struct {
				Topic     string
				Allowed   bool
				DecidedBy string `json:"decided_by"`
			}
		}
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got.Provider != "corp" || got.Identity.Username != "alice@example.com" || len(got.ACL.Topics) != 2 ||
		!got.ACL.Topics[0].Allowed || got.ACL.Topics[0].DecidedBy != "rules[0]" ||
		got.ACL.Topics[1].Allowed || got.ACL.Topics[1].DecidedBy != "default deny" {
		t.Fatalf("explanation: %s", rec.Body)
	}

	expired := idp.token(t, jwt.MapClaims{"org_id": "acme", "exp": time.Now().Add(-time.Hour).Unix()})
	res := call(t, h, "POST", "/v1/explain", `{"token": "`+expired+`"}`, map[string]string{"Authorization": "Bearer " + adminKey})
	e, _ := res.body["error"].(map[string]any)
	if res.status != 200 || e["code"] != "token_expired" || e["fix"] == "" {
		t.Fatalf("expired token: %d %v", res.status, res.body)
	}
}

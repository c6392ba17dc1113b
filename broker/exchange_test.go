package broker

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/idmq/idmq/authhook"
	"github.com/idmq/idmq/internal/testkit"
)

// testIdP is the test kit's IdP (one RS256 key) minting the tokens broker tests start from.
type testIdP struct{ *testkit.IdP }

func newTestIdP(t testing.TB) *testIdP { return &testIdP{testkit.NewIdP(t)} }

// token signs a token for user-1 from the IdP, valid for a minute; claims add to it, a nil value removes.
func (idp *testIdP) token(t testing.TB, claims jwt.MapClaims) string {
	t.Helper()
	base := jwt.MapClaims{"iss": idp.Issuer(), "aud": "mqtt", "sub": "user-1", "email": "Alice@Example.com",
		"iat": time.Now().Unix(), "exp": time.Now().Add(time.Minute).Unix()}
	for k, v := range claims {
		if v == nil {
			delete(base, k)
		} else {
			base[k] = v
		}
	}
	return idp.Sign(t, base)
}

// newTestBroker builds a broker (nothing bound) whose HTTP routes tests call directly.
func newTestBroker(t *testing.T, idp *testIdP, extraHTTP string) (*Broker, http.Handler) {
	t.Helper()
	if !strings.Contains(extraHTTP, "rate_limit") {
		extraHTTP += "\n  rate_limit: {per_second: 1, burst: 100}"
	}
	yaml := fmt.Sprintf(`
data_dir: %s
listeners: [{type: tcp, address: "127.0.0.1:0"}]
http:
  address: "127.0.0.1:0"
  cors_origins: ["https://app.example.com"]
%s
storage: {type: memory}
auth:
  providers:
    - {name: local, type: local}
    - name: corp
      type: oidc
      issuer: %s
      jwks_url: %s
      audiences: [mqtt]
      username_claim: email
      claims: [{path: org_id, attribute: org_id, required: true}]
acl: {rules: [{topic: "users/%%u/#", access: pubsub}]}
`, t.TempDir(), extraHTTP, idp.Issuer(), idp.JWKSURL())
	b := brokerFromYAML(t, yaml)
	return b, b.routes()
}

// brokerFromYAML builds a broker (nothing bound, logging nowhere) from a config; its hooks close when the
// test ends.
func brokerFromYAML(tb testing.TB, yaml string) *Broker {
	tb.Helper()
	cfg, err := Parse([]byte(yaml), tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	b, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = b.auth.Stop() })
	return b
}

type httpResult struct {
	status int
	body   map[string]any
	header http.Header
}

func call(t *testing.T, h http.Handler, method, path, body string, headers map[string]string) httpResult {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.RemoteAddr = "192.0.2.10:5555"
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	res := httpResult{status: rec.Code, header: rec.Header(), body: map[string]any{}}
	_ = json.Unmarshal(rec.Body.Bytes(), &res.body)
	return res
}

func TestExchangeErrors(t *testing.T) {
	idp := newTestIdP(t)
	b, h := newTestBroker(t, idp, "")
	good := idp.token(t, jwt.MapClaims{"org_id": "o1"})
	own, err := b.auth.LocalIssuer().Mint("bob", time.Minute, nil, authhook.TopicGrants{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		body   string
		status int
		code   string
	}{
		{"bad JSON", `{"token": `, 400, "invalid_request"},
		{"missing token", `{}`, 400, "invalid_request"},
		{"unknown field", `{"tok": "x"}`, 400, "invalid_request"},
		{"body over 64 KiB", `{"token": "` + strings.Repeat("a", 70<<10) + `"}`, 400, "invalid_request"},
		{"provider not found", `{"token": "` + good + `", "provider": "nope"}`, 404, "provider_not_found"},
		{"issuer matches no provider", `{"token": "` + idp.tokenFromIssuer(t, "https://evil.example") + `"}`, 401, "issuer_mismatch"},
		{"issuer does not match the named provider", `{"token": "` + good + `", "provider": "local"}`, 401, "issuer_mismatch"},
		{"expired", `{"token": "` + idp.token(t, jwt.MapClaims{"org_id": "o1", "exp": time.Now().Add(-time.Hour).Unix()}) + `"}`, 401, "token_expired"},
		{"bad signature", `{"token": "` + good[:len(good)-4] + `AAAA"}`, 401, "invalid_signature"},
		{"wrong audience", `{"token": "` + idp.token(t, jwt.MapClaims{"org_id": "o1", "aud": "other"}) + `"}`, 401, "invalid_audience"},
		{"missing required claim", `{"token": "` + idp.token(t, nil) + `"}`, 401, "missing_claim"},
		{"idmq's own credential", `{"token": "` + own + `"}`, 400, "invalid_request"},
		{"not a JWT", `{"token": "not-a-jwt"}`, 400, "invalid_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := call(t, h, "POST", "/v2/tokens/exchange", tt.body, nil)
			if r.status != tt.status || r.body["error"] != tt.code || r.body["message"] == "" {
				t.Fatalf("got %d %v, want %d %s", r.status, r.body, tt.status, tt.code)
			}
		})
	}
}

func (idp *testIdP) tokenFromIssuer(t *testing.T, iss string) string {
	return idp.token(t, jwt.MapClaims{"iss": iss, "org_id": "o1"})
}

func TestExchangeIssuesWorkingCredentials(t *testing.T) {
	idp := newTestIdP(t)
	b, h := newTestBroker(t, idp, "")
	for _, tc := range []struct {
		name    string
		body    string
		headers map[string]string
	}{
		{"token in body", `{"token": "` + idp.token(t, jwt.MapClaims{"org_id": "o1"}) + `", "provider": "corp"}`, nil},
		{"token as bearer", ``, map[string]string{"Authorization": "Bearer " + idp.token(t, jwt.MapClaims{"org_id": "o1"})}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := call(t, h, "POST", "/v2/tokens/exchange", tc.body, tc.headers)
			if r.status != 200 {
				t.Fatalf("status %d %v", r.status, r.body)
			}
			if r.body["mqtt_username"] != "alice@example.com" || r.body["provider"] != "corp" ||
				!strings.HasPrefix(r.body["client_id"].(string), "alice@example.com-") {
				t.Fatalf("response %v", r.body)
			}
			exp, err := time.Parse(time.RFC3339, r.body["expires_at"].(string))
			if err != nil || exp.Sub(time.Now()) < 59*time.Minute || r.body["expires_in"].(float64) < 3500 {
				t.Fatalf("lifetime: expires_at %v expires_in %v (default ttl is 1h)", r.body["expires_at"], r.body["expires_in"])
			}
			id, err := b.auth.Verify(t.Context(), r.body["mqtt_password"].(string), "")
			if err != nil || id.Username != "alice@example.com" || id.Attributes["org_id"] != "o1" {
				t.Fatalf("minted credential does not verify to the same identity: %+v %v", id, err)
			}
		})
	}
}

func TestExchangeCORS(t *testing.T) {
	_, h := newTestBroker(t, newTestIdP(t), "")
	pre := map[string]string{"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
	r := call(t, h, "OPTIONS", "/v2/tokens/exchange", "", pre)
	if r.status != 204 || r.header.Get("Access-Control-Allow-Origin") != "https://app.example.com" {
		t.Fatalf("allowed preflight: %d %v", r.status, r.header)
	}
	pre["Origin"] = "https://evil.example.com"
	r = call(t, h, "OPTIONS", "/v2/tokens/exchange", "", pre)
	if r.status != 403 || r.header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("denied preflight: %d %v", r.status, r.header)
	}
	r = call(t, h, "POST", "/v2/tokens/exchange", `{}`, map[string]string{"Origin": "https://evil.example.com"})
	if r.header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatal("a foreign origin got CORS headers on POST")
	}
}

func TestExchangeRateLimit(t *testing.T) {
	b, h := newTestBroker(t, newTestIdP(t), "  rate_limit: {per_second: 1, burst: 3}")
	now := time.Now()
	ex := b.exchange
	ex.limit.now = func() time.Time { return now }
	for i := 0; i < 3; i++ {
		if r := call(t, h, "POST", "/v2/tokens/exchange", `{}`, nil); r.status != 400 {
			t.Fatalf("request %d inside the burst: %d", i, r.status)
		}
	}
	r := call(t, h, "POST", "/v2/tokens/exchange", `{}`, nil)
	if r.status != 429 || r.body["error"] != "rate_limited" || r.header.Get("Retry-After") != "1" {
		t.Fatalf("after the burst: %d %v Retry-After=%q", r.status, r.body, r.header.Get("Retry-After"))
	}
	now = now.Add(1100 * time.Millisecond) // one token refilled at 1/s
	if r := call(t, h, "POST", "/v2/tokens/exchange", `{}`, nil); r.status != 400 {
		t.Fatalf("after refill: %d", r.status)
	}
	if r := call(t, h, "POST", "/v2/tokens/exchange", `{}`, nil); r.status != 429 {
		t.Fatalf("refill gave more than one token: %d", r.status)
	}
}

func TestExchangeAPIKey(t *testing.T) {
	idp := newTestIdP(t)
	_, h := newTestBroker(t, idp, `  api_keys: ["sk_test_0123456789abcdef"]`)
	body := `{"token": "` + idp.token(t, jwt.MapClaims{"org_id": "o1"}) + `"}`
	for _, tc := range []struct {
		name   string
		auth   string
		status int
	}{
		{"no key", "", 401},
		{"wrong key", "Bearer sk_test_wrong_wrong_wrong", 401},
		{"IdP token as bearer is not a key", "Bearer " + idp.token(t, jwt.MapClaims{"org_id": "o1"}), 401},
		{"right key", "Bearer sk_test_0123456789abcdef", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hd := map[string]string{}
			if tc.auth != "" {
				hd["Authorization"] = tc.auth
			}
			r := call(t, h, "POST", "/v2/tokens/exchange", body, hd)
			if r.status != tc.status || (tc.status == 401 && r.body["error"] != "unauthorized") {
				t.Fatalf("got %d %v, want %d", r.status, r.body, tc.status)
			}
		})
	}
}

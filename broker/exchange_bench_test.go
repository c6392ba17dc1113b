package broker

import (
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// BenchmarkExchange compares the whole exchange request (verify the IdP token, mint idmq's credential,
// encode the response) with verifying the IdP token alone, in the same process. The verified-token cache
// is off so every iteration pays the full signature check, as a fresh IdP token would.
func BenchmarkExchange(b *testing.B) {
	idp := newTestIdP(b)
	br := brokerFromYAML(b, fmt.Sprintf(`
data_dir: %s
listeners: [{type: tcp, address: "127.0.0.1:0"}]
http: {address: "127.0.0.1:0", rate_limit: {per_second: 1e9, burst: 1000000000}}
storage: {type: memory}
auth:
  cache_size: -1
  providers:
    - {name: local, type: local}
    - {name: corp, type: oidc, issuer: %s, jwks_url: %s, audiences: [mqtt], username_claim: email}
acl: {rules: [{topic: "users/%%u/#", access: pubsub}]}
`, b.TempDir(), idp.Issuer(), idp.JWKSURL()))
	token := idp.token(b, jwt.MapClaims{})
	if _, err := br.auth.Verify(b.Context(), token, ""); err != nil {
		b.Fatal(err) // also warms the key set
	}
	h := br.routes()
	body := `{"token": "` + token + `"}`

	b.Run("verify-only", func(b *testing.B) {
		for b.Loop() {
			if _, err := br.auth.Verify(b.Context(), token, ""); err != nil {
				b.Fatal(err)
			}
		}
	})
	// Interleaved: each iteration verifies once and exchanges once, so machine noise hits both alike; the
	// ratio is reported as the exchange/verify metric (the target: <= 1.3).
	b.Run("ratio", func(b *testing.B) {
		reader := strings.NewReader(body)
		req := httptest.NewRequest("POST", "/v2/tokens/exchange", reader)
		rec := httptest.NewRecorder()
		var verify, exchange time.Duration
		for b.Loop() {
			t0 := time.Now()
			if _, err := br.auth.Verify(b.Context(), token, ""); err != nil {
				b.Fatal(err)
			}
			t1 := time.Now()
			reader.Reset(body)
			req.Body = io.NopCloser(reader)
			rec.Body.Reset()
			h.ServeHTTP(rec, req)
			t2 := time.Now()
			if rec.Code != 200 {
				b.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			verify += t1.Sub(t0)
			exchange += t2.Sub(t1)
		}
		b.ReportMetric(float64(exchange)/float64(verify), "exchange/verify")
	})
	b.Run("exchange", func(b *testing.B) {
		// One request value, its body rewound each time: what is measured is the handler, not httptest.
		reader := strings.NewReader(body)
		req := httptest.NewRequest("POST", "/v2/tokens/exchange", reader)
		rec := httptest.NewRecorder()
		for b.Loop() {
			reader.Reset(body)
			req.Body = io.NopCloser(reader)
			rec.Body.Reset()
			h.ServeHTTP(rec, req)
			if rec.Code != 200 {
				b.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
		}
	})
}

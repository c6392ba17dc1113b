package broker

import (
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

// BenchmarkExchange compares the whole exchange request (verify the IdP token, mint idmq's credential,
// encode the response) with verifying the IdP token alone, in the same process. The verified-token cache
// is off so every iteration pays the full signature check, as a fresh IdP token would.
func BenchmarkExchange(b *testing.B) {
	idp := newTestIdP(&testing.T{})
	cfg, err := Parse([]byte(fmt.Sprintf(`
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
`, b.TempDir(), idp.issuer, idp.issuer)), b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	br, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	defer br.auth.Close()
	token := idp.token(&testing.T{}, jwt.MapClaims{})
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
	b.Run("exchange", func(b *testing.B) {
		for b.Loop() {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("POST", "/v2/tokens/exchange", strings.NewReader(body)))
			if rec.Code != 200 {
				b.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
		}
	})
}

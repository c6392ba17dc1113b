package authhook

import (
	"context"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/idmq/idmq/internal/testkit"
)

func TestSupabaseLegacySecret(t *testing.T) {
	clock := newFakeClock()
	secret := "super-secret-jwt-token-with-at-least-32-characters-long"
	rsaKey := testkit.NewKey(t, "RS256", "rsa")
	cfg := Config{Providers: []ProviderConfig{{Name: "supa", Type: TypeSupabase, ProjectURL: "https://abc.supabase.co", JWTSecret: secret}}}
	h := newHookFor(t, cfg, nil, clock.Now)
	claims := func() map[string]any {
		return map[string]any{"iss": "https://abc.supabase.co/auth/v1", "aud": "authenticated", "sub": "3f1c-uuid",
			"exp": clock.Now().Add(time.Hour).Unix(), "iat": clock.Now().Unix()}
	}
	tests := []struct {
		name  string
		token string
		want  Reason
	}{
		{name: "HS256 with the project secret", token: hmacToken(t, secret, claims()), want: ""},
		{name: "HS256 with another secret", token: hmacToken(t, secret+"x", claims()), want: ReasonInvalidSignature},
		{name: "RS256 refused", token: rsaKey.Sign(t, claims()), want: ReasonAlgNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := h.Verify(context.Background(), tt.token, "")
			if ReasonOf(err) != tt.want || (tt.want == "" && (err != nil || id.Username != "3f1c-uuid")) {
				t.Fatalf("id %+v err %v, want %q", id, err, tt.want)
			}
		})
	}
}

func hmacToken(t *testing.T, secret string, claims map[string]any) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims(claims))
	s, err := tok.SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// OAuth access tokens (RFC 9068) carry typ "at+jwt"; many IdPs send them to resource servers such as idmq.
func TestAccessTokenTypeAccepted(t *testing.T) {
	clock := newFakeClock()
	key := testkit.NewKey(t, "RS256", "rsa-1")
	idp := testkit.NewIdP(t, key)
	h := newHookFor(t, oidcConfig(idp.Issuer()), nil, clock.Now)
	waitReady(t, h)
	for _, typ := range []string{"at+jwt", "application/at+jwt", "JWT"} {
		t.Run(typ, func(t *testing.T) {
			tok := jwt.NewWithClaims(key.Method, jwt.MapClaims(baseClaims(idp.Issuer())(clock.Now())))
			tok.Header["kid"] = key.KID
			tok.Header["typ"] = typ
			s, err := tok.SignedString(key.Signer)
			if err != nil {
				t.Fatal(err)
			}
			if id, err := h.Verify(context.Background(), s, ""); err != nil || id.Username != "alice" {
				t.Fatalf("typ %q: %+v %v", typ, id, err)
			}
		})
	}
}

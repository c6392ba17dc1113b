package authhook

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/idmq/idmq/internal/testkit"
)

func TestMapIdentity(t *testing.T) {
	clerk, _ := resolveProvider(ProviderConfig{Name: "clerk", Type: TypeClerk, Domains: []string{"x.clerk.dev"}, UsernamePrefix: "clerk:",
		TopicsClaim: "mqtt_topics",
		Claims: []ClaimMapping{{Path: "https://example.com/org", Attribute: "org", Required: true},
			{Path: "app_metadata.plan", Attribute: "plan", Default: "free"}, {Path: "n", Attribute: "n"}}})
	tests := []struct {
		name    string
		claims  string
		want    *Identity
		reason  Reason
		claimAt string
	}{
		{name: "email lower-cased, namespaced and nested claims",
			claims: `{"sub":"user_1","email":"Alice@Example.COM","https://example.com/org":"acme","app_metadata":{"plan":"pro"},"n":12345678901234567,"mqtt_topics":["a/b"]}`,
			want: &Identity{Username: "clerk:alice@example.com", Subject: "user_1", Provider: "clerk",
				Attributes: map[string]string{"org": "acme", "plan": "pro", "n": "12345678901234567"}, Grants: TopicGrants{All: []string{"a/b"}}}},
		{name: "no email: sub, default applied",
			claims: `{"sub":"user/2","https://example.com/org":"acme","mqtt_topics":{"publish":["p"],"sub":["s/#"]}}`,
			want: &Identity{Username: "clerk:user%2F2", Subject: "user/2", Provider: "clerk",
				Attributes: map[string]string{"org": "acme", "plan": "free"}, Grants: TopicGrants{Publish: []string{"p"}, Subscribe: []string{"s/#"}}}},
		{name: "required claim missing", claims: `{"sub":"u"}`, reason: ReasonMissingClaim, claimAt: "https://example.com/org"},
		{name: "required claim not a scalar", claims: `{"sub":"u","https://example.com/org":{"id":1}}`, reason: ReasonMissingClaim, claimAt: "https://example.com/org"},
		{name: "no username claim", claims: `{"https://example.com/org":"acme"}`, reason: ReasonMissingClaim, claimAt: "email"},
		{name: "bad grants", claims: `{"sub":"u","https://example.com/org":"acme","mqtt_topics":[1]}`, reason: ReasonMalformed, claimAt: "mqtt_topics"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dec := json.NewDecoder(strings.NewReader(tt.claims))
			dec.UseNumber()
			var c jwt.MapClaims
			if err := dec.Decode(&c); err != nil {
				t.Fatal(err)
			}
			id, err := mapIdentity(&clerk, c)
			if tt.reason != "" {
				var e *Error
				if ReasonOf(err) != tt.reason || !errors.As(err, &e) || e.Claim != tt.claimAt {
					t.Fatalf("err = %v, want %s naming %q", err, tt.reason, tt.claimAt)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(id, tt.want) {
				t.Fatalf("identity = %+v\nwant %+v", id, tt.want)
			}
		})
	}
}

// TestClaimPaths: a JSON Pointer reaches keys with dots and slashes (Auth0 namespaced claims); a malformed
// one is refused at load, naming the field.
func TestClaimPaths(t *testing.T) {
	claims := map[string]any{
		"https://example.com/app": map[string]any{"plan.v2": "pro", "a~b": "tilde"},
		"app_metadata":            map[string]any{"plan": "free"},
		"https://example.com/org": "acme",
	}
	for path, want := range map[string]any{
		"/https:~1~1example.com~1app/plan.v2": "pro",
		"/https:~1~1example.com~1app/a~0b":    "tilde",
		"/app_metadata/plan":                  "free",
		"app_metadata.plan":                   "free",
		"https://example.com/org":             "acme",
		"/https:~1~1example.com~1app/plan":    nil,
	} {
		got, ok := claimAt(claims, path)
		if want == nil {
			if ok {
				t.Errorf("%s found %v, want nothing", path, got)
			}
		} else if got != want {
			t.Errorf("%s = %v, want %v", path, got, want)
		}
	}
	cfg := Config{Providers: []ProviderConfig{{Name: "a0", Type: TypeAuth0, Domain: "t.auth0.com", UsernameClaim: "/bad~2",
		Claims: []ClaimMapping{{Path: "/x//y", Attribute: "x"}}}}}
	cfg.SetDefaults()
	err := cfg.Validate()
	for _, want := range []string{"providers[0].claims[0].path: JSON Pointer \"/x//y\": key 1 is empty", "providers[0].username_claim: JSON Pointer \"/bad~2\""} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate: %v, want %q", err, want)
		}
	}
}

// TestListClaims: an array of scalars maps to a list attribute, survives the token exchange, and anything
// else in an array leaves the attribute unset.
func TestListClaims(t *testing.T) {
	spec, _ := resolveProvider(ProviderConfig{Name: "a0", Type: TypeAuth0, Domain: "t.auth0.com",
		Claims: []ClaimMapping{{Path: "/https:~1~1example.com~1roles", Attribute: "roles"}, {Path: "mixed", Attribute: "mixed"}}})
	id, err := mapIdentity(&spec, jwt.MapClaims{"sub": "alice", "https://example.com/roles": []any{"admin", "ops"}, "mixed": []any{"a", map[string]any{}}})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(id.Lists, map[string][]string{"roles": {"admin", "ops"}}) || id.Attributes != nil {
		t.Fatalf("lists %v attributes %v, want roles [admin ops] and nothing else", id.Lists, id.Attributes)
	}
	li, err := newLocalIssuer(&providerSpec{name: "local", issuers: []issuerSpec{{issuer: "idmq"}}, audiences: []string{"idmq"}}, testkit.NewKey(t, "ES256", "k").Signer, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := li.MintCredential(id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	parsed, _, err := jwt.NewParser().ParseUnverified(tok, jwt.MapClaims{})
	if err != nil {
		t.Fatal(err)
	}
	back, err := mapLocalIdentity("local", parsed.Claims.(jwt.MapClaims), nil)
	if err != nil || !reflect.DeepEqual(back.Lists, id.Lists) {
		t.Fatalf("exchanged credential lists %v (%v), want %v", back.Lists, err, id.Lists)
	}
}

package authhook

import (
	"slices"
	"testing"
)

func TestResolveProvider(t *testing.T) {
	tests := []struct {
		name      string
		in        ProviderConfig
		issuers   []issuerSpec
		audiences []string
		algs      []string
		usernames []string
	}{
		{name: "oidc discovers keys", in: ProviderConfig{Name: "o", Type: TypeOIDC, Issuer: "https://idp.example.com"},
			issuers: []issuerSpec{{issuer: "https://idp.example.com"}}, algs: defaultAlgorithms, usernames: []string{"sub"}},
		{name: "clerk: one issuer per domain, email else sub", in: ProviderConfig{Name: "c", Type: TypeClerk, Domains: []string{"a.clerk.accounts.dev", "clerk.example.com"}},
			issuers: []issuerSpec{
				{issuer: "https://a.clerk.accounts.dev", jwksURL: "https://a.clerk.accounts.dev/.well-known/jwks.json", jwksExplicit: true},
				{issuer: "https://clerk.example.com", jwksURL: "https://clerk.example.com/.well-known/jwks.json", jwksExplicit: true}},
			algs: defaultAlgorithms, usernames: []string{"email", "sub"}},
		{name: "auth0: issuer with trailing slash", in: ProviderConfig{Name: "a", Type: TypeAuth0, Domain: "t.auth0.com", Audience: "https://api"},
			issuers:   []issuerSpec{{issuer: "https://t.auth0.com/", jwksURL: "https://t.auth0.com/.well-known/jwks.json", jwksExplicit: true}},
			audiences: []string{"https://api"}, algs: defaultAlgorithms, usernames: []string{"sub"}},
		{name: "supabase with secret: HS256 only", in: ProviderConfig{Name: "s", Type: TypeSupabase, ProjectURL: "https://abc.supabase.co/", JWTSecret: "x"},
			issuers:   []issuerSpec{{issuer: "https://abc.supabase.co/auth/v1", jwksURL: "https://abc.supabase.co/auth/v1/.well-known/jwks.json", jwksExplicit: true}},
			audiences: []string{"authenticated"}, algs: []string{"HS256"}, usernames: []string{"sub"}},
		{name: "firebase", in: ProviderConfig{Name: "f", Type: TypeFirebase, ProjectID: "my-app"},
			issuers:   []issuerSpec{{issuer: "https://securetoken.google.com/my-app", jwksURL: firebaseJWKSURL, jwksExplicit: true}},
			audiences: []string{"my-app"}, algs: defaultAlgorithms, usernames: []string{"sub"}},
		{name: "preset fields overridden", in: ProviderConfig{Name: "f", Type: TypeFirebase, ProjectID: "my-app", Audiences: []string{"x"}, Algorithms: []string{"RS256"}, UsernameClaim: "email", JWKSURL: "https://keys.example.com/jwks"},
			issuers:   []issuerSpec{{issuer: "https://securetoken.google.com/my-app", jwksURL: "https://keys.example.com/jwks", jwksExplicit: true}},
			audiences: []string{"x"}, algs: []string{"RS256"}, usernames: []string{"email"}},
		{name: "local defaults", in: ProviderConfig{Name: "l", Type: TypeLocal},
			issuers: []issuerSpec{{issuer: "idmq"}}, audiences: []string{"idmq"}, usernames: []string{"sub"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := resolveProvider(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(s.issuers, tt.issuers) || !slices.Equal(s.audiences, tt.audiences) ||
				!slices.Equal(s.algorithms, tt.algs) || !slices.Equal(s.usernameClaims, tt.usernames) {
				t.Fatalf("got issuers %v aud %v algs %v usernames %v", s.issuers, s.audiences, s.algorithms, s.usernameClaims)
			}
		})
	}
}

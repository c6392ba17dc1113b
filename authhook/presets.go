package authhook

import (
	"fmt"
	"strings"
)

// FirebaseJWKSURL is Google's key set for Firebase Authentication ID tokens.
const FirebaseJWKSURL = "https://www.googleapis.com/service_accounts/v1/jwk/securetoken@system.gserviceaccount.com"

// providerSpec is a provider after its preset is expanded: everything the generic verifier needs.
type providerSpec struct {
	name           string
	typ            string
	issuers        []issuerSpec
	audiences      []string
	algorithms     []string
	usernameClaims []string // the first one present in the token wins
	prefix         string
	claims         []ClaimMapping
	topicsClaim    string
	azp            []string
	hmacSecret     []byte // supabase legacy projects only
}

type issuerSpec struct {
	issuer       string
	jwksURL      string // "" = from the issuer's discovery document
	jwksExplicit bool   // configured (or fixed by the preset), so it may live on another host than the issuer
}

// resolveProvider expands a preset into the generic OIDC settings. Generic fields set in the config win.
func resolveProvider(p ProviderConfig) (providerSpec, error) {
	s := providerSpec{
		name:        p.Name,
		typ:         p.Type,
		audiences:   p.Audiences,
		algorithms:  p.Algorithms,
		prefix:      p.UsernamePrefix,
		claims:      p.Claims,
		topicsClaim: p.TopicsClaim,
		azp:         p.AuthorizedParties,
	}
	var presetAud []string
	usernames := []string{"sub"}
	switch p.Type {
	case TypeOIDC:
		s.issuers = []issuerSpec{{issuer: p.Issuer}}
	case TypeClerk:
		for _, d := range p.Domains {
			s.issuers = append(s.issuers, issuerSpec{issuer: "https://" + d, jwksURL: "https://" + d + "/.well-known/jwks.json", jwksExplicit: true})
		}
		usernames = []string{"email", "sub"}
	case TypeAuth0:
		if p.Domain != "" {
			// Auth0's iss ends with a slash; the match is exact.
			s.issuers = []issuerSpec{{issuer: "https://" + p.Domain + "/", jwksURL: "https://" + p.Domain + "/.well-known/jwks.json", jwksExplicit: true}}
		}
		if p.Audience != "" {
			presetAud = []string{p.Audience}
		}
	case TypeSupabase:
		if p.ProjectURL != "" {
			iss := strings.TrimSuffix(p.ProjectURL, "/") + "/auth/v1"
			s.issuers = []issuerSpec{{issuer: iss, jwksURL: iss + "/.well-known/jwks.json", jwksExplicit: true}}
		}
		presetAud = []string{"authenticated"}
		if p.JWTSecret != "" {
			s.hmacSecret = []byte(p.JWTSecret)
			s.algorithms = []string{"HS256"}
		}
	case TypeFirebase:
		if p.ProjectID != "" {
			s.issuers = []issuerSpec{{issuer: "https://securetoken.google.com/" + p.ProjectID, jwksURL: FirebaseJWKSURL, jwksExplicit: true}}
			presetAud = []string{p.ProjectID}
		}
	case TypeDevices:
		// No issuer: device tokens have none; the devices provider is selected by client id and aud.
		if len(s.algorithms) == 0 {
			s.algorithms = DefaultDeviceAlgorithms
		}
		return s, nil
	case TypeLocal:
		iss := p.Issuer
		if iss == "" {
			iss = DefaultLocalIssuer
		}
		s.issuers = []issuerSpec{{issuer: iss}}
		presetAud = []string{DefaultLocalAudience}
		s.algorithms = nil // fixed by the signing key
	default:
		return s, fmt.Errorf("authhook: provider %q: unknown type %q", p.Name, p.Type)
	}
	if p.Type != TypeLocal && p.Issuer != "" && p.Type != TypeOIDC {
		s.issuers = []issuerSpec{{issuer: p.Issuer}}
	}
	if p.JWKSURL != "" {
		for i := range s.issuers {
			s.issuers[i].jwksURL = p.JWKSURL
			s.issuers[i].jwksExplicit = true
		}
	}
	if len(s.audiences) == 0 {
		s.audiences = presetAud
	}
	if len(s.algorithms) == 0 && p.Type != TypeLocal {
		s.algorithms = DefaultAlgorithms
	}
	if p.UsernameClaim != "" {
		usernames = []string{p.UsernameClaim}
	}
	s.usernameClaims = usernames
	if len(s.issuers) == 0 {
		return s, fmt.Errorf("authhook: provider %q has no issuer", p.Name)
	}
	return s, nil
}

package authhook

import (
	"fmt"
	"slices"
	"strings"
)

// firebaseJWKSURL is Google's key set for Firebase Authentication ID tokens.
const firebaseJWKSURL = "https://www.googleapis.com/service_accounts/v1/jwk/securetoken@system.gserviceaccount.com"

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

// idpFields are the keys every identity-provider type takes: the generic OIDC settings, which override what
// a preset derives.
type idpFields struct {
	Issuer            string         `yaml:"issuer"`
	JWKSURL           string         `yaml:"jwks_url"`
	Audiences         []string       `yaml:"audiences"`
	Algorithms        []string       `yaml:"algorithms"`
	UsernameClaim     string         `yaml:"username_claim"`
	UsernamePrefix    string         `yaml:"username_prefix"`
	Claims            []ClaimMapping `yaml:"claims"`
	TopicsClaim       string         `yaml:"topics_claim"`
	AuthorizedParties []string       `yaml:"authorized_parties"`
}

// validate checks the generic fields, after the type's own checks. hmac: the type verifies with a shared
// secret (supabase with jwt_secret), the one case where HS* algorithms are allowed.
func (f *idpFields) validate(errs *problems, hmac bool) {
	if f.Issuer != "" {
		if msg := checkHTTPS(f.Issuer); msg != "" {
			errs.add("issuer", "%s", msg)
		}
	}
	if f.JWKSURL != "" {
		if msg := checkHTTPS(f.JWKSURL); msg != "" {
			errs.add("jwks_url", "%s", msg)
		}
	}
	checkAlgorithms(errs, f.Algorithms, hmac)
	checkAudiences(errs, f.Audiences)
	checkUsernamePrefix(errs, f.UsernamePrefix)
	checkClaims(errs, f.Claims)
	if f.UsernameClaim != "" {
		checkClaimPath(errs, "username_claim", f.UsernameClaim)
	}
	if f.TopicsClaim != "" {
		checkClaimPath(errs, "topics_claim", f.TopicsClaim)
	}
}

// preset is what a type derives from its own keys, before the generic fields override it.
type preset struct {
	issuers    []issuerSpec
	audiences  []string
	usernames  []string // default [sub]
	algorithms []string // fixed by the type when set (supabase's HS256), whatever the config says
	hmacSecret []byte
}

func (f *idpFields) resolve(name string, p preset) providerSpec {
	s := providerSpec{
		name:        name,
		issuers:     p.issuers,
		audiences:   f.Audiences,
		algorithms:  f.Algorithms,
		prefix:      f.UsernamePrefix,
		claims:      f.Claims,
		topicsClaim: f.TopicsClaim,
		azp:         f.AuthorizedParties,
		hmacSecret:  p.hmacSecret,
	}
	if f.Issuer != "" {
		s.issuers = []issuerSpec{{issuer: f.Issuer}}
	}
	if f.JWKSURL != "" {
		for i := range s.issuers {
			s.issuers[i].jwksURL = f.JWKSURL
			s.issuers[i].jwksExplicit = true
		}
	}
	if len(s.audiences) == 0 {
		s.audiences = p.audiences
	}
	if p.algorithms != nil {
		s.algorithms = p.algorithms
	}
	if len(s.algorithms) == 0 {
		s.algorithms = defaultAlgorithms
	}
	s.usernameClaims = []string{"sub"}
	if p.usernames != nil {
		s.usernameClaims = p.usernames
	}
	if f.UsernameClaim != "" {
		s.usernameClaims = []string{f.UsernameClaim}
	}
	return s
}

// oidcSettings is type oidc: any OpenID Connect issuer, keys from its discovery document or jwks_url.
type oidcSettings struct{ idpFields }

func (c *oidcSettings) validate(errs *problems) {
	if c.Issuer == "" {
		errs.add("issuer", "is required for type oidc")
	}
	c.idpFields.validate(errs, false)
}

func (c *oidcSettings) resolve(name string) providerSpec { return c.idpFields.resolve(name, preset{}) }

// clerkSettings is type clerk: one issuer per Frontend API domain; the username is the email, else sub.
type clerkSettings struct {
	idpFields
	Domains []string `yaml:"domains"`
}

func (c *clerkSettings) validate(errs *problems) {
	if len(c.Domains) == 0 && c.Issuer == "" {
		errs.add("domains", "is required for type clerk (e.g. [happy-fox-12.clerk.accounts.dev])")
	}
	for i, d := range c.Domains {
		if !validHost(d) {
			errs.add(fmt.Sprintf("domains[%d]", i), "must be a host name without scheme or path, got %q", d)
		}
	}
	c.idpFields.validate(errs, false)
}

func (c *clerkSettings) resolve(name string) providerSpec {
	p := preset{usernames: []string{"email", "sub"}}
	for _, d := range c.Domains {
		p.issuers = append(p.issuers, issuerSpec{issuer: "https://" + d, jwksURL: "https://" + d + "/.well-known/jwks.json", jwksExplicit: true})
	}
	return c.idpFields.resolve(name, p)
}

// auth0Settings is type auth0: a tenant domain and, usually, the API's audience.
type auth0Settings struct {
	idpFields
	Domain   string `yaml:"domain"`
	Audience string `yaml:"audience"`
}

func (c *auth0Settings) validate(errs *problems) {
	if c.Domain == "" && c.Issuer == "" {
		errs.add("domain", "is required for type auth0 (e.g. tenant.auth0.com)")
	} else if c.Domain != "" && !validHost(c.Domain) {
		errs.add("domain", "must be a host name without scheme or path, got %q", c.Domain)
	}
	c.idpFields.validate(errs, false)
}

func (c *auth0Settings) resolve(name string) providerSpec {
	var p preset
	if c.Domain != "" {
		// Auth0's iss ends with a slash; the match is exact.
		p.issuers = []issuerSpec{{issuer: "https://" + c.Domain + "/", jwksURL: "https://" + c.Domain + "/.well-known/jwks.json", jwksExplicit: true}}
	}
	if c.Audience != "" {
		p.audiences = []string{c.Audience}
	}
	return c.idpFields.resolve(name, p)
}

// supabaseSettings is type supabase: the project URL; legacy projects sign with the HS256 jwt_secret.
type supabaseSettings struct {
	idpFields
	ProjectURL string `yaml:"project_url"`
	JWTSecret  string `yaml:"jwt_secret"`
}

func (c *supabaseSettings) validate(errs *problems) {
	if c.ProjectURL == "" && c.Issuer == "" {
		errs.add("project_url", "is required for type supabase (e.g. https://abc.supabase.co)")
	} else if c.ProjectURL != "" {
		if msg := checkHTTPS(c.ProjectURL); msg != "" {
			errs.add("project_url", "%s", msg)
		}
	}
	if c.JWTSecret != "" {
		if len(c.JWTSecret) < 32 {
			errs.add("jwt_secret", "must be at least 32 characters (the project's JWT secret)")
		}
		if len(c.Algorithms) > 0 && !slices.Equal(c.Algorithms, []string{"HS256"}) {
			errs.add("algorithms", "must be [HS256] (or unset) when jwt_secret is set")
		}
	}
	c.idpFields.validate(errs, c.JWTSecret != "")
}

func (c *supabaseSettings) resolve(name string) providerSpec {
	p := preset{audiences: []string{"authenticated"}}
	if c.ProjectURL != "" {
		iss := strings.TrimSuffix(c.ProjectURL, "/") + "/auth/v1"
		p.issuers = []issuerSpec{{issuer: iss, jwksURL: iss + "/.well-known/jwks.json", jwksExplicit: true}}
	}
	if c.JWTSecret != "" {
		p.hmacSecret = []byte(c.JWTSecret)
		p.algorithms = []string{"HS256"}
	}
	return c.idpFields.resolve(name, p)
}

// firebaseSettings is type firebase: the project id is both the issuer's last segment and the audience.
type firebaseSettings struct {
	idpFields
	ProjectID string `yaml:"project_id"`
}

func (c *firebaseSettings) validate(errs *problems) {
	if c.ProjectID == "" && c.Issuer == "" {
		errs.add("project_id", "is required for type firebase")
	}
	c.idpFields.validate(errs, false)
}

func (c *firebaseSettings) resolve(name string) providerSpec {
	var p preset
	if c.ProjectID != "" {
		p.issuers = []issuerSpec{{issuer: "https://securetoken.google.com/" + c.ProjectID, jwksURL: firebaseJWKSURL, jwksExplicit: true}}
		p.audiences = []string{c.ProjectID}
	}
	return c.idpFields.resolve(name, p)
}

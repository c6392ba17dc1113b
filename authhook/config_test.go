package authhook

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // every error, in order
	}{
		{name: "empty is valid", yaml: `{}`},
		{name: "issue example", yaml: `
leeway: 5s
providers:
  - name: corp
    type: oidc
    issuer: https://idp.example.com
    audiences: [mqtt]
    algorithms: [RS256, ES256, EdDSA]
    claims:
      - {path: org_id, attribute: org_id, required: true}
      - {path: app_metadata.plan, attribute: plan, default: free}
  - {name: clerk, type: clerk, domains: [happy-fox-12.clerk.accounts.dev, clerk.example.com], authorized_parties: [https://app.example.com]}
  - {name: auth0, type: auth0, domain: tenant.auth0.com, audience: https://api.example.com}
  - {name: supabase, type: supabase, project_url: https://abc.supabase.co, jwt_secret: "0123456789abcdef0123456789abcdef0123"}
  - {name: firebase, type: firebase, project_id: my-app}
  - {name: local, type: local}
`},
		{name: "jwks_url not https", yaml: `
providers:
  - {name: a, type: oidc, issuer: https://idp.example.com}
  - {name: b, type: oidc, issuer: https://b.example.com}
  - {name: c, type: oidc, issuer: https://c.example.com, jwks_url: "http://keys.example.com/jwks"}
`, want: []string{`providers[2].jwks_url: must be an https URL (http is allowed only on loopback), got "http://keys.example.com/jwks"`}},
		{name: "loopback http allowed", yaml: `
providers: [{name: dev, type: oidc, issuer: "http://127.0.0.1:5556"}]
`},
		{name: "missing type and bad name", yaml: `
providers: [{name: Corp}]
`, want: []string{`providers[0].name: must be 1-63 lower-case letters, digits, '-' or '_', got "Corp"`, `providers[0].type: is required: one of oidc, clerk, auth0, supabase, firebase, local, devices`}},
		{name: "unknown type: only the type is named", yaml: `
providers: [{name: a, type: odic, issuer: https://idp.example.com, domains: [x.clerk.dev]}]
`, want: []string{`providers[0].type: must be one of oidc, clerk, auth0, supabase, firebase, local, devices, got "odic"`}},
		{name: "a key of another type is not validated as if it applied", yaml: `
providers: [{name: l, type: local, claims: [{path: x, attribute: username}]}]
`, want: []string{`providers[0].claims: only applies to type oidc or clerk or auth0 or supabase or firebase`}},
		{name: "duplicate name and issuer", yaml: `
providers:
  - {name: a, type: oidc, issuer: https://idp.example.com}
  - {name: a, type: oidc, issuer: https://idp.example.com}
`, want: []string{`providers[1].name: "a" is already the name of providers[0]`, `providers[1]: issuer "https://idp.example.com" is also the issuer of provider "a": the token's iss must select one provider`}},
		{name: "none and HMAC on public keys", yaml: `
providers: [{name: a, type: oidc, issuer: https://idp.example.com, algorithms: [RS256, none, HS256, XX1]}]
`, want: []string{
			`providers[0].algorithms[1]: "none" is never accepted`,
			`providers[0].algorithms[2]: HS256 is an HMAC algorithm: only a supabase provider with jwt_secret may use it (a provider with public keys must never accept HMAC)`,
			`providers[0].algorithms[3]: unknown algorithm "XX1" (one of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA)`}},
		{name: "claim mapping problems", yaml: `
providers:
  - name: a
    type: oidc
    issuer: https://idp.example.com
    claims:
      - {path: org, attribute: org}
      - {path: other, attribute: org}
      - {path: x, attribute: username}
      - {path: "a..b", attribute: "1bad", required: true, default: d}
`, want: []string{
			`providers[0].claims[1].attribute: "org" is already mapped by claims[0]`,
			`providers[0].claims[2].attribute: "username" is reserved (username, client_id, provider, subject are always available)`,
			`providers[0].claims[3].path: must be a claim name, a dotted path like app_metadata.plan, or a JSON Pointer like /app_metadata/plan, got "a..b"`,
			`providers[0].claims[3].attribute: must be a letter or '_' followed by letters, digits or '_', got "1bad"`,
			`providers[0].claims[3].default: a required claim cannot have a default`}},
		{name: "preset fields on the wrong type", yaml: `
providers: [{name: a, type: oidc, issuer: https://idp.example.com, domain: x.auth0.com, project_id: p}]
`, want: []string{`providers[0].domain: only applies to type auth0`, `providers[0].project_id: only applies to type firebase`}},
		{name: "preset required fields", yaml: `
providers:
  - {name: c, type: clerk, domains: ["https://x.clerk.dev"]}
  - {name: a, type: auth0}
  - {name: s, type: supabase, project_url: https://abc.supabase.co, jwt_secret: short, algorithms: [RS256]}
  - {name: f, type: firebase}
`, want: []string{
			`providers[0].domains[0]: must be a host name without scheme or path, got "https://x.clerk.dev"`,
			`providers[1].domain: is required for type auth0 (e.g. tenant.auth0.com)`,
			`providers[2].jwt_secret: must be at least 32 characters (the project's JWT secret)`,
			`providers[2].algorithms: must be [HS256] (or unset) when jwt_secret is set`,
			`providers[3].project_id: is required for type firebase`}},
		{name: "two local providers", yaml: `
providers: [{name: l1, type: local}, {name: l2, type: local, issuer: other}]
`, want: []string{`providers[1].type: only one local provider is allowed`}},
		{name: "globals", yaml: `
leeway: 10m
jwks_refresh_interval: 10s
unknown_kid_cooldown: 10ms
placeholder_usernames: [""]
`, want: []string{`leeway: must be between 0s and 5m, got 10m0s`, `jwks_refresh_interval: must be at least 1m, got 10s`,
			`unknown_kid_cooldown: must be at least 1s, got 10ms`, `placeholder_usernames[0]: must not be empty`}},
		{name: "devices: issue example", yaml: `
providers:
  - name: fleet
    type: devices
    project: my-project
    max_lifetime: 24h
    iat_skew: 10m
    registry_dir: ./devices
    devices:
      - id: thermostat-42
        keys:
          - {file: keys/t42-rsa.pem}
          - {file: keys/t42-ec.pem, expires: 2027-01-01T00:00:00Z}
        blocked: false
      - {id: retired, blocked: true}
`},
		{name: "devices: required and misplaced fields", yaml: `
providers:
  - {name: fleet, type: devices, issuer: https://idp.example.com, audiences: [x], username_prefix: "d:", algorithms: [RS256, HS256, PS256]}
  - {name: corp, type: oidc, issuer: https://idp.example.com, project: p, registry_dir: d, max_lifetime: 1h}
`, want: []string{
			`providers[0].issuer: does not apply to type devices: device tokens have no iss (the aud is the project)`,
			`providers[0].audiences: does not apply to type devices: set project, the one aud device tokens carry`,
			`providers[0].username_prefix: does not apply to type devices: the username is the device id`,
			`providers[0].project: is required for type devices (the aud of device tokens, e.g. my-project)`,
			`providers[0].algorithms[1]: a devices provider accepts RS256, ES256, EdDSA, got "HS256"`,
			`providers[0].algorithms[2]: a devices provider accepts RS256, ES256, EdDSA, got "PS256"`,
			`providers[0].registry_dir: a devices provider needs registry_dir, devices, or both`,
			`providers[1].project: only applies to type devices`,
			`providers[1].max_lifetime: only applies to type devices`,
			`providers[1].registry_dir: only applies to type devices`}},
		{name: "devices: limits, ids, keys", yaml: `
providers:
  - name: a
    type: devices
    project: "my project"
    max_lifetime: 25h
    iat_skew: -1s
    devices:
      - {id: "a/b", keys: [{file: x.pem}]}
      - {id: dup, keys: [{file: x.pem}]}
      - {id: dup, keys: [{file: x.pem}]}
      - {id: nokeys}
      - {id: many, keys: [{file: a}, {file: b}, {file: c}, {file: d}]}
      - {id: both, keys: [{file: a, pem: b}, {}]}
      - {id: badpem, keys: [{pem: "-----BEGIN PRIVATE KEY-----\nAQ==\n-----END PRIVATE KEY-----"}]}
  - {name: b, type: devices, project: p, registry_dir: d}
  - {name: c, type: devices, project: p, registry_dir: d}
`, want: []string{
			`providers[0].project: must be a project id without '/' or spaces, got "my project"`,
			`providers[0].max_lifetime: must be between 1m and 24h (0 = 24h), got 25h0m0s`,
			`providers[0].iat_skew: must be between 1s and 24h (0 = 10m), got -1s`,
			`providers[0].devices[0].id: must start with a letter or digit, followed by up to 254 letters, digits or - . _ ~ + %, got "a/b"`,
			`providers[0].devices[2].id: "dup" is already devices[1]`,
			`providers[0].devices[3].keys: device "nokeys" has no key: add one, or set blocked: true to refuse it`,
			`providers[0].devices[4].keys: a device has at most 3 keys, got 4`,
			`providers[0].devices[5].keys[0]: needs exactly one of pem and file`,
			`providers[0].devices[5].keys[1]: needs exactly one of pem and file`,
			`providers[0].devices[6].keys[0].pem: PEM block 1: PRIVATE KEY: a private key does not belong in the registry; register the device's public key or certificate`,
			`providers[2].project: "p" is also the project of provider "b": the project must select one devices provider`}},
		{name: "exchange and revocations", yaml: `
exchange: {ttl: 12h}
revocation_retention: 24h
`},
		{name: "exchange ttl out of range", yaml: `
exchange: {ttl: 30s}
`, want: []string{`exchange.ttl: must be between 1m and 24h, got 30s`}},
		{name: "exchange ttl too long", yaml: `
exchange: {ttl: 25h}
`, want: []string{`exchange.ttl: must be between 1m and 24h, got 25h0m0s`}},
		{name: "revocation retention too short", yaml: `
revocation_retention: 10m
`, want: []string{`revocation_retention: must be at least 1h, got 10m0s`}},
		{name: "revocation retention shorter than exchanged credentials", yaml: `
exchange: {ttl: 12h}
revocation_retention: 2h
`, want: []string{`revocation_retention: must be at least exchange.ttl (12h0m0s): a revoked exchanged credential would become valid again, got 2h0m0s`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c Config
			dec := yaml.NewDecoder(strings.NewReader(tt.yaml))
			dec.KnownFields(true)
			if err := dec.Decode(&c); err != nil {
				t.Fatal(err)
			}
			c.SetDefaults()
			err := c.Validate()
			var got []string
			if err != nil {
				for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
					var fe *FieldError
					if !errors.As(e, &fe) || !strings.HasPrefix(e.Error(), fe.Path+": ") {
						t.Fatalf("%v is not a FieldError naming its path", e)
					}
					got = append(got, e.Error())
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	var c Config
	c.SetDefaults()
	if c.Leeway != 5*time.Second || c.JWKSRefreshInterval != 15*time.Minute || c.UnknownKIDCooldown != 30*time.Second ||
		c.CacheSize != defaultCacheSize || !slices.Equal(c.PlaceholderUsernames, []string{"jwt", "unused"}) ||
		c.Exchange.TTL != time.Hour || c.RevocationRetention != 7*24*time.Hour {
		t.Fatalf("defaults = %+v", c)
	}
	c = Config{PlaceholderUsernames: []string{}}
	c.SetDefaults()
	if len(c.PlaceholderUsernames) != 0 {
		t.Fatal("an explicit empty placeholder list was replaced")
	}
}

func TestAttributeNames(t *testing.T) {
	c := Config{Providers: []ProviderConfig{
		{Name: "a", Type: TypeOIDC, Claims: []ClaimMapping{{Path: "org_id", Attribute: "org"}, {Path: "p", Attribute: "plan"}}},
		{Name: "b", Type: TypeClerk, Claims: []ClaimMapping{{Path: "org", Attribute: "org"}}},
		{Name: "l", Type: TypeLocal, Attributes: []string{"role"}},
	}}
	if got := c.AttributeNames(); !slices.Equal(got, []string{"org", "plan", "role"}) {
		t.Fatalf("AttributeNames = %v", got)
	}
	c.Providers = append(c.Providers, ProviderConfig{Name: "d", Type: TypeDevices})
	if got := c.AttributeNames(); !slices.Equal(got, []string{"device_id", "org", "plan", "region", "registry", "role"}) {
		t.Fatalf("AttributeNames with a devices provider = %v", got)
	}
}

package authhook

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/idmq/idmq/internal/fielderr"
)

// Provider types.
const (
	TypeOIDC     = "oidc"
	TypeClerk    = "clerk"
	TypeAuth0    = "auth0"
	TypeSupabase = "supabase"
	TypeFirebase = "firebase"
	TypeLocal    = "local"
	TypeDevices  = "devices"
)

// ProviderAnonymous is the Identity.Provider of clients let in by allow_anonymous.
const ProviderAnonymous = "anonymous"

// Defaults that SetDefaults fills in; each field's comment states its own.
const (
	defaultLeeway              = 5 * time.Second
	defaultJWKSRefreshInterval = 15 * time.Minute
	defaultUnknownKIDCooldown  = 30 * time.Second
	defaultCacheSize           = 10000
	defaultExchangeTTL         = time.Hour
	// defaultRevocationRetention keeps a revocation for 7 days. A revocation only matters while a credential
	// issued before it can still be presented, so the retention must outlive the longest credential accepted:
	// exchanged credentials live at most 24h, IdP access tokens typically minutes to a day, and `idmq token`
	// credentials are usually shorter than a week. Dropping older entries keeps the file and the set small.
	defaultRevocationRetention = 7 * 24 * time.Hour
	// defaultDeviceMaxLifetime is the longest exp - iat of a device token, as in Cloud IoT Core and ClearBlade.
	defaultDeviceMaxLifetime = 24 * time.Hour
	// defaultDeviceIATSkew is how far a device token's iat may be from now, either way.
	defaultDeviceIATSkew = 10 * time.Minute
)

// defaultDeviceAlgorithms are the algorithms a devices provider accepts when `algorithms` is not set: those
// of Cloud IoT Core. EdDSA may be added by name; HMAC never.
var defaultDeviceAlgorithms = []string{"RS256", "ES256"}

// defaultAlgorithms are the algorithms a public-key provider accepts when `algorithms` is not set.
var defaultAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"}

// Config is the `auth:` section of the broker's YAML file. The zero value (after SetDefaults) refuses
// everyone: no provider, no anonymous access.
type Config struct {
	// AllowAnonymous lets clients that present no credential in as an anonymous identity (Provider
	// "anonymous", empty username). Clients that present a bad credential are still refused.
	AllowAnonymous bool `yaml:"allow_anonymous"`
	// Leeway is the clock skew allowed on exp, nbf and iat. 0 means the default, 5s.
	Leeway time.Duration `yaml:"leeway"`
	// PlaceholderUsernames are CONNECT usernames accepted beside the token's own (MQTT 3.1.1 needs a username
	// whenever a password is sent). nil means [jwt, unused]; an empty list allows none.
	PlaceholderUsernames []string `yaml:"placeholder_usernames"`
	// SigningKeyFile is the PEM (PKCS#8, EC P-256, RSA or Ed25519) private key of the `local` provider. Empty:
	// a P-256 key generated on first start in the data directory.
	SigningKeyFile string `yaml:"signing_key_file"`
	// JWKSRefreshInterval is how often remote key sets are fetched again. Default 15m.
	JWKSRefreshInterval time.Duration `yaml:"jwks_refresh_interval"`
	// UnknownKIDCooldown is the least time between two fetches of a provider's key set caused by tokens whose
	// kid is unknown, however many clients present them. Default 30s.
	UnknownKIDCooldown time.Duration `yaml:"unknown_kid_cooldown"`
	// CacheSize bounds the verified-token cache (entries). Default 10000; -1 disables the cache.
	CacheSize int `yaml:"cache_size"`
	// Exchange configures credentials minted by the token exchange (POST /v2/tokens/exchange).
	Exchange ExchangeConfig `yaml:"exchange"`
	// RevocationRetention is how long a revocation is kept (on disk, across restarts). It must be longer than
	// any credential accepted, or a revoked credential becomes valid again. Default 168h (7 days).
	RevocationRetention time.Duration    `yaml:"revocation_retention"`
	Providers           []ProviderConfig `yaml:"providers"`
}

// ExchangeConfig is `auth.exchange`.
type ExchangeConfig struct {
	// TTL is the lifetime of an exchanged credential, independent of the IdP token's. Default 1h, 1m..24h.
	TTL time.Duration `yaml:"ttl"`
}

// ProviderConfig is one entry of `auth.providers`: the keys of every type in one flat struct, so that the YAML
// stays one list. Each type takes only its own keys (one settings struct per type, see providers.go);
// Validate names a key given to a type that does not take it. Preset types (clerk, auth0, supabase, firebase)
// fill the generic fields from their own; any generic field set explicitly overrides the preset.
type ProviderConfig struct {
	Name string `yaml:"name"`
	Type string `yaml:"type"`

	// Generic OIDC fields.
	Issuer            string         `yaml:"issuer"`             // exact match on iss
	JWKSURL           string         `yaml:"jwks_url"`           // "" = from issuer's discovery document
	Audiences         []string       `yaml:"audiences"`          // token must carry one; empty = not checked
	Algorithms        []string       `yaml:"algorithms"`         // default RS256, RS384, RS512, PS256, ES256, ES384, EdDSA
	UsernameClaim     string         `yaml:"username_claim"`     // default sub (clerk: email, else sub)
	UsernamePrefix    string         `yaml:"username_prefix"`    // e.g. "corp:"
	Claims            []ClaimMapping `yaml:"claims"`             // claims -> attributes
	TopicsClaim       string         `yaml:"topics_claim"`       // claim holding extra topic grants
	AuthorizedParties []string       `yaml:"authorized_parties"` // azp must be one of these when set

	// Presets.
	Domains    []string `yaml:"domains"`     // clerk: one issuer per domain
	Domain     string   `yaml:"domain"`      // auth0
	Audience   string   `yaml:"audience"`    // auth0
	ProjectURL string   `yaml:"project_url"` // supabase
	JWTSecret  string   `yaml:"jwt_secret"`  // supabase legacy HS256 projects
	ProjectID  string   `yaml:"project_id"`  // firebase

	// Local: Attributes lists the attribute names local credentials may carry (`idmq token --claim`, the
	// token exchange's mapped attributes are added automatically). Used only to tell the ACL which names exist.
	Attributes []string `yaml:"attributes"`

	// Devices (Cloud IoT Core / ClearBlade device JWTs); see DeviceConfig. Algorithms applies too.
	Project     string         `yaml:"project"`      // required: the token's aud
	MaxLifetime time.Duration  `yaml:"max_lifetime"` // exp - iat limit (plus leeway); 0 = 24h
	IATSkew     time.Duration  `yaml:"iat_skew"`     // |now - iat| allowed; 0 = 10m
	RegistryDir string         `yaml:"registry_dir"` // <device-id>.pem files, reloaded while running
	Devices     []DeviceConfig `yaml:"devices"`      // inline devices; an entry overrides a registry_dir file of the same id
}

// DeviceConfig is one inline device of a devices provider.
type DeviceConfig struct {
	ID      string      `yaml:"id"`
	Keys    []DeviceKey `yaml:"keys"` // at most 3; required unless Blocked
	Blocked bool        `yaml:"blocked"`
}

// DeviceKey is one public key (PEM "PUBLIC KEY", "RSA PUBLIC KEY" or "CERTIFICATE") of a device, inline or
// in a file. A certificate's NotAfter is an expiry too; the earlier of the two applies.
type DeviceKey struct {
	PEM     string    `yaml:"pem"`
	File    string    `yaml:"file"`
	Expires time.Time `yaml:"expires"` // zero = never
}

// ClaimMapping maps a claim (a dotted path into nested objects) onto an attribute usable by ACL rules.
type ClaimMapping struct {
	Path      string `yaml:"path"`
	Attribute string `yaml:"attribute"`
	Required  bool   `yaml:"required"`
	Default   string `yaml:"default"`
}

// FieldError is a configuration error about one field; Path is relative to the `auth:` section. It is the same
// type as aclhook.FieldError and broker.FieldError.
type FieldError = fielderr.FieldError

// SetDefaults fills unset fields. Validate expects it to have run.
func (c *Config) SetDefaults() {
	if c.Leeway == 0 {
		c.Leeway = defaultLeeway
	}
	if c.PlaceholderUsernames == nil {
		c.PlaceholderUsernames = []string{"jwt", "unused"}
	}
	if c.JWKSRefreshInterval == 0 {
		c.JWKSRefreshInterval = defaultJWKSRefreshInterval
	}
	if c.UnknownKIDCooldown == 0 {
		c.UnknownKIDCooldown = defaultUnknownKIDCooldown
	}
	if c.CacheSize == 0 {
		c.CacheSize = defaultCacheSize
	}
	if c.Exchange.TTL == 0 {
		c.Exchange.TTL = defaultExchangeTTL
	}
	if c.RevocationRetention == 0 {
		c.RevocationRetention = defaultRevocationRetention
	}
}

// Validate reports every problem at once, each as a *FieldError joined with errors.Join.
func (c *Config) Validate() error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, fielderr.New(path, format, args...))
	}
	if c.Leeway < 0 || c.Leeway > 5*time.Minute {
		add("leeway", "must be between 0s and 5m, got %s", c.Leeway)
	}
	if c.JWKSRefreshInterval < time.Minute {
		add("jwks_refresh_interval", "must be at least 1m, got %s", c.JWKSRefreshInterval)
	}
	if c.UnknownKIDCooldown < time.Second {
		add("unknown_kid_cooldown", "must be at least 1s, got %s", c.UnknownKIDCooldown)
	}
	if c.CacheSize < -1 {
		add("cache_size", "must be -1 (off) or a positive number of entries, got %d", c.CacheSize)
	}
	if c.Exchange.TTL < time.Minute || c.Exchange.TTL > 24*time.Hour {
		add("exchange.ttl", "must be between 1m and 24h, got %s", c.Exchange.TTL)
	}
	if c.RevocationRetention < time.Hour {
		add("revocation_retention", "must be at least 1h, got %s", c.RevocationRetention)
	} else if c.RevocationRetention < c.Exchange.TTL {
		add("revocation_retention", "must be at least exchange.ttl (%s): a revoked exchanged credential would become valid again, got %s", c.Exchange.TTL, c.RevocationRetention)
	}
	for i, u := range c.PlaceholderUsernames {
		if u == "" {
			add(fmt.Sprintf("placeholder_usernames[%d]", i), "must not be empty")
		}
	}
	errs = append(errs, c.validateProviders()...)
	return errors.Join(errs...)
}

// validateProviders checks each provider entry, then what must be unique across them: names, issuers (the
// token's iss selects the provider), devices projects, and the one local provider.
func (c *Config) validateProviders() []error {
	var errs problems
	names := map[string]int{}
	issuers := map[string]string{}
	projects := map[string]string{}
	locals := 0
	for i := range c.Providers {
		p := &c.Providers[i]
		at := fmt.Sprintf("providers[%d]", i)
		if !providerName.MatchString(p.Name) {
			errs.add(at+".name", "must be 1-63 lower-case letters, digits, '-' or '_', got %q", p.Name)
		} else if j, dup := names[p.Name]; dup {
			errs.add(at+".name", "%q is already the name of providers[%d]", p.Name, j)
		} else {
			names[p.Name] = i
		}
		if p.Name == ProviderAnonymous {
			errs.add(at+".name", "%q is reserved for anonymous clients", p.Name)
		}
		if p.Type == TypeLocal {
			locals++
			if locals > 1 {
				errs.add(at+".type", "only one local provider is allowed")
			}
		}
		for _, fe := range validateProvider(p) {
			fe.Path = at + "." + fe.Path
			errs = append(errs, fe)
		}
		if p.Type == TypeDevices && p.Project != "" {
			if other, dup := projects[p.Project]; dup {
				errs.add(at+".project", "%q is also the project of provider %q: the project must select one devices provider", p.Project, other)
			} else {
				projects[p.Project] = p.Name
			}
		}
		if spec, err := resolveProvider(*p); err == nil {
			for _, iss := range spec.issuers {
				if other, dup := issuers[iss.issuer]; dup {
					errs.add(at, "issuer %q is also the issuer of provider %q: the token's iss must select one provider", iss.issuer, other)
				} else {
					issuers[iss.issuer] = p.Name
				}
			}
		}
	}
	out := make([]error, len(errs))
	for i, e := range errs {
		out[i] = e
	}
	return out
}

// AttributeNames lists every attribute any provider can put on an Identity.
func (c Config) AttributeNames() []string {
	var out []string
	for _, p := range c.Providers {
		for _, m := range p.Claims {
			out = append(out, m.Attribute)
		}
		out = append(out, p.Attributes...)
	}
	if slices.ContainsFunc(c.Providers, func(p ProviderConfig) bool { return p.Type == TypeDevices }) {
		out = append(out, deviceAttributes...)
	}
	if hasLocal(c.Providers) {
		// Exchanged credentials carry the attributes of the provider that verified the IdP token.
		for _, p := range c.Providers {
			for _, m := range p.Claims {
				out = append(out, m.Attribute)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func hasLocal(ps []ProviderConfig) bool {
	return slices.ContainsFunc(ps, func(p ProviderConfig) bool { return p.Type == TypeLocal })
}

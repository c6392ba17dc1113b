package authhook

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

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

// Defaults.
const (
	DefaultLeeway              = 5 * time.Second
	DefaultJWKSRefreshInterval = 15 * time.Minute
	DefaultUnknownKIDCooldown  = 30 * time.Second
	DefaultCacheSize           = 10000
	DefaultLocalIssuer         = "idmq"
	DefaultLocalAudience       = "idmq"
	DefaultExchangeTTL         = time.Hour
	// DefaultRevocationRetention keeps a revocation for 7 days. A revocation only matters while a credential
	// issued before it can still be presented, so the retention must outlive the longest credential accepted:
	// exchanged credentials live at most 24h, IdP access tokens typically minutes to a day, and `idmq token`
	// credentials are usually shorter than a week. Dropping older entries keeps the file and the set small.
	DefaultRevocationRetention = 7 * 24 * time.Hour
	// DefaultDeviceMaxLifetime is the longest exp - iat of a device token, as in Cloud IoT Core and ClearBlade.
	DefaultDeviceMaxLifetime = 24 * time.Hour
	// DefaultDeviceIATSkew is how far a device token's iat may be from now, either way.
	DefaultDeviceIATSkew = 10 * time.Minute
)

// DefaultDeviceAlgorithms are the algorithms a devices provider accepts when `algorithms` is not set: those
// of Cloud IoT Core. EdDSA may be added by name; HMAC never.
var DefaultDeviceAlgorithms = []string{"RS256", "ES256"}

// DefaultAlgorithms are the algorithms a public-key provider accepts when `algorithms` is not set.
var DefaultAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"}

var (
	publicKeyAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
	providerName        = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
	attributeName       = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)
	// Attribute names the ACL provides itself; a mapping onto them would be shadowed or shadow them.
	reservedAttributes = []string{"username", "client_id", "provider", "subject"}
	deviceAlgorithms   = []string{"RS256", "ES256", "EdDSA"}
)

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

// ProviderConfig is one entry of `auth.providers`. Preset types (clerk, auth0, supabase, firebase) fill the
// generic fields from their own; any generic field set explicitly overrides the preset.
type ProviderConfig struct {
	Name string `yaml:"name"`
	Type string `yaml:"type"`

	// Generic OIDC fields.
	Issuer            string         `yaml:"issuer"`             // exact match on iss
	JWKSURL           string         `yaml:"jwks_url"`           // "" = from issuer's discovery document
	Audiences         []string       `yaml:"audiences"`          // token must carry one; empty = not checked
	Algorithms        []string       `yaml:"algorithms"`         // default DefaultAlgorithms
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
	Keys    []DeviceKey `yaml:"keys"` // at most MaxDeviceKeys; required unless Blocked
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
		c.Leeway = DefaultLeeway
	}
	if c.PlaceholderUsernames == nil {
		c.PlaceholderUsernames = []string{"jwt", "unused"}
	}
	if c.JWKSRefreshInterval == 0 {
		c.JWKSRefreshInterval = DefaultJWKSRefreshInterval
	}
	if c.UnknownKIDCooldown == 0 {
		c.UnknownKIDCooldown = DefaultUnknownKIDCooldown
	}
	if c.CacheSize == 0 {
		c.CacheSize = DefaultCacheSize
	}
	if c.Exchange.TTL == 0 {
		c.Exchange.TTL = DefaultExchangeTTL
	}
	if c.RevocationRetention == 0 {
		c.RevocationRetention = DefaultRevocationRetention
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
	names := map[string]int{}
	issuers := map[string]string{}
	projects := map[string]string{}
	locals := 0
	for i := range c.Providers {
		p := &c.Providers[i]
		at := fmt.Sprintf("providers[%d]", i)
		if !providerName.MatchString(p.Name) {
			add(at+".name", "must be 1-63 lower-case letters, digits, '-' or '_', got %q", p.Name)
		} else if j, dup := names[p.Name]; dup {
			add(at+".name", "%q is already the name of providers[%d]", p.Name, j)
		} else {
			names[p.Name] = i
		}
		if p.Name == ProviderAnonymous {
			add(at+".name", "%q is reserved for anonymous clients", p.Name)
		}
		if p.Type == TypeLocal {
			locals++
			if locals > 1 {
				add(at+".type", "only one local provider is allowed")
			}
		}
		for _, fe := range validateProvider(p) {
			fe.Path = at + "." + fe.Path
			errs = append(errs, fe)
		}
		if p.Type == TypeDevices && p.Project != "" {
			if other, dup := projects[p.Project]; dup {
				add(at+".project", "%q is also the project of provider %q: the project must select one devices provider", p.Project, other)
			} else {
				projects[p.Project] = p.Name
			}
		}
		if spec, err := resolveProvider(*p); err == nil {
			for _, iss := range spec.issuers {
				if other, dup := issuers[iss.issuer]; dup {
					add(at, "issuer %q is also the issuer of provider %q: the token's iss must select one provider", iss.issuer, other)
				} else {
					issuers[iss.issuer] = p.Name
				}
			}
		}
	}
	return errors.Join(errs...)
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
		out = append(out, DeviceAttributes...)
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

func validateProvider(p *ProviderConfig) []*FieldError {
	var errs []*FieldError
	add := func(path, format string, args ...any) {
		errs = append(errs, fielderr.New(path, format, args...))
	}
	// Fields that belong to one type only; setting them elsewhere is a mistake worth naming.
	only := func(field string, set bool, types ...string) {
		if set && !slices.Contains(types, p.Type) {
			add(field, "only applies to type %s", strings.Join(types, " or "))
		}
	}
	only("domains", len(p.Domains) > 0, TypeClerk)
	only("domain", p.Domain != "", TypeAuth0)
	only("audience", p.Audience != "", TypeAuth0)
	only("project_url", p.ProjectURL != "", TypeSupabase)
	only("jwt_secret", p.JWTSecret != "", TypeSupabase)
	only("project_id", p.ProjectID != "", TypeFirebase)
	only("attributes", len(p.Attributes) > 0, TypeLocal)
	only("jwks_url", p.JWKSURL != "", TypeOIDC, TypeClerk, TypeAuth0, TypeSupabase, TypeFirebase)
	only("authorized_parties", len(p.AuthorizedParties) > 0, TypeOIDC, TypeClerk, TypeAuth0, TypeSupabase, TypeFirebase)
	only("claims", len(p.Claims) > 0, TypeOIDC, TypeClerk, TypeAuth0, TypeSupabase, TypeFirebase)
	only("topics_claim", p.TopicsClaim != "", TypeOIDC, TypeClerk, TypeAuth0, TypeSupabase, TypeFirebase)
	only("username_claim", p.UsernameClaim != "", TypeOIDC, TypeClerk, TypeAuth0, TypeSupabase, TypeFirebase)
	only("project", p.Project != "", TypeDevices)
	only("max_lifetime", p.MaxLifetime != 0, TypeDevices)
	only("iat_skew", p.IATSkew != 0, TypeDevices)
	only("registry_dir", p.RegistryDir != "", TypeDevices)
	only("devices", len(p.Devices) > 0, TypeDevices)

	switch p.Type {
	case TypeOIDC:
		if p.Issuer == "" {
			add("issuer", "is required for type oidc")
		}
	case TypeClerk:
		if len(p.Domains) == 0 && p.Issuer == "" {
			add("domains", "is required for type clerk (e.g. [happy-fox-12.clerk.accounts.dev])")
		}
		for i, d := range p.Domains {
			if !validHost(d) {
				add(fmt.Sprintf("domains[%d]", i), "must be a host name without scheme or path, got %q", d)
			}
		}
	case TypeAuth0:
		if p.Domain == "" && p.Issuer == "" {
			add("domain", "is required for type auth0 (e.g. tenant.auth0.com)")
		} else if p.Domain != "" && !validHost(p.Domain) {
			add("domain", "must be a host name without scheme or path, got %q", p.Domain)
		}
	case TypeSupabase:
		if p.ProjectURL == "" && p.Issuer == "" {
			add("project_url", "is required for type supabase (e.g. https://abc.supabase.co)")
		} else if p.ProjectURL != "" {
			if msg := checkHTTPS(p.ProjectURL); msg != "" {
				add("project_url", "%s", msg)
			}
		}
		if p.JWTSecret != "" {
			if len(p.JWTSecret) < 32 {
				add("jwt_secret", "must be at least 32 characters (the project's JWT secret)")
			}
			if len(p.Algorithms) > 0 && !slices.Equal(p.Algorithms, []string{"HS256"}) {
				add("algorithms", "must be [HS256] (or unset) when jwt_secret is set")
			}
		}
	case TypeFirebase:
		if p.ProjectID == "" && p.Issuer == "" {
			add("project_id", "is required for type firebase")
		}
	case TypeLocal:
		if p.Issuer != "" && strings.TrimSpace(p.Issuer) != p.Issuer {
			add("issuer", "must not have surrounding spaces")
		}
		for i, a := range p.Attributes {
			if !attributeName.MatchString(a) {
				add(fmt.Sprintf("attributes[%d]", i), "must be a letter or '_' followed by letters, digits or '_', got %q", a)
			}
		}
	case TypeDevices:
		return append(errs, validateDevices(p)...)
	case "":
		add("type", "is required: one of oidc, clerk, auth0, supabase, firebase, local, devices")
		return errs
	default:
		add("type", "must be one of oidc, clerk, auth0, supabase, firebase, local, devices, got %q", p.Type)
		return errs
	}

	if p.Type != TypeLocal && p.Issuer != "" {
		if msg := checkHTTPS(p.Issuer); msg != "" {
			add("issuer", "%s", msg)
		}
	}
	if p.JWKSURL != "" {
		if msg := checkHTTPS(p.JWKSURL); msg != "" {
			add("jwks_url", "%s", msg)
		}
	}
	hmac := p.Type == TypeSupabase && p.JWTSecret != ""
	for i, a := range p.Algorithms {
		switch {
		case a == "none" || strings.EqualFold(a, "none"):
			add(fmt.Sprintf("algorithms[%d]", i), "\"none\" is never accepted")
		case strings.HasPrefix(a, "HS"):
			if !hmac {
				add(fmt.Sprintf("algorithms[%d]", i), "%s is an HMAC algorithm: only a supabase provider with jwt_secret may use it (a provider with public keys must never accept HMAC)", a)
			}
		case !slices.Contains(publicKeyAlgorithms, a):
			add(fmt.Sprintf("algorithms[%d]", i), "unknown algorithm %q (one of %s)", a, strings.Join(publicKeyAlgorithms, ", "))
		}
	}
	for i, a := range p.Audiences {
		if a == "" {
			add(fmt.Sprintf("audiences[%d]", i), "must not be empty")
		}
	}
	if p.UsernamePrefix != "" && !safeUsername(p.UsernamePrefix) {
		add("username_prefix", "must not contain '+', '#', '/', control characters or start with '$', got %q", p.UsernamePrefix)
	}
	seen := map[string]int{}
	for i, m := range p.Claims {
		at := fmt.Sprintf("claims[%d]", i)
		if m.Path == "" || strings.HasPrefix(m.Path, ".") || strings.HasSuffix(m.Path, ".") || strings.Contains(m.Path, "..") {
			add(at+".path", "must be a claim name or dotted path like app_metadata.plan, got %q", m.Path)
		}
		switch {
		case !attributeName.MatchString(m.Attribute):
			add(at+".attribute", "must be a letter or '_' followed by letters, digits or '_', got %q", m.Attribute)
		case slices.Contains(reservedAttributes, m.Attribute):
			add(at+".attribute", "%q is reserved (%s are always available)", m.Attribute, strings.Join(reservedAttributes, ", "))
		default:
			if j, dup := seen[m.Attribute]; dup {
				add(at+".attribute", "%q is already mapped by claims[%d]", m.Attribute, j)
			}
			seen[m.Attribute] = i
		}
		if m.Required && m.Default != "" {
			add(at+".default", "a required claim cannot have a default")
		}
	}
	return errs
}

// validateDevices checks a devices provider. Inline PEM keys are parsed here, so a bad key fails the config
// at load; key files and registry_dir are read by New.
func validateDevices(p *ProviderConfig) []*FieldError {
	var errs []*FieldError
	add := func(path, format string, args ...any) {
		errs = append(errs, fielderr.New(path, format, args...))
	}
	if p.Issuer != "" {
		add("issuer", "does not apply to type devices: device tokens have no iss (the aud is the project)")
	}
	if len(p.Audiences) > 0 {
		add("audiences", "does not apply to type devices: set project, the one aud device tokens carry")
	}
	if p.UsernamePrefix != "" {
		add("username_prefix", "does not apply to type devices: the username is the device id")
	}
	switch {
	case p.Project == "":
		add("project", "is required for type devices (the aud of device tokens, e.g. my-project)")
	case strings.ContainsAny(p.Project, "/ ") || !utf8.ValidString(p.Project):
		add("project", "must be a project id without '/' or spaces, got %q", p.Project)
	}
	if p.MaxLifetime < 0 || p.MaxLifetime > DefaultDeviceMaxLifetime || (p.MaxLifetime != 0 && p.MaxLifetime < time.Minute) {
		add("max_lifetime", "must be between 1m and 24h (0 = 24h), got %s", p.MaxLifetime)
	}
	if p.IATSkew < 0 || p.IATSkew > DefaultDeviceMaxLifetime || (p.IATSkew != 0 && p.IATSkew < time.Second) {
		add("iat_skew", "must be between 1s and 24h (0 = 10m), got %s", p.IATSkew)
	}
	for i, a := range p.Algorithms {
		if !slices.Contains(deviceAlgorithms, a) {
			add(fmt.Sprintf("algorithms[%d]", i), "a devices provider accepts %s, got %q", strings.Join(deviceAlgorithms, ", "), a)
		}
	}
	if p.RegistryDir == "" && len(p.Devices) == 0 {
		add("registry_dir", "a devices provider needs registry_dir, devices, or both")
	}
	ids := map[string]int{}
	for i, d := range p.Devices {
		at := fmt.Sprintf("devices[%d]", i)
		if !validDeviceID(d.ID) {
			add(at+".id", "must start with a letter or digit, followed by up to 254 letters, digits or - . _ ~ + %%, got %q", d.ID)
		} else if j, dup := ids[d.ID]; dup {
			add(at+".id", "%q is already devices[%d]", d.ID, j)
		} else {
			ids[d.ID] = i
		}
		if len(d.Keys) == 0 && !d.Blocked {
			add(at+".keys", "device %q has no key: add one, or set blocked: true to refuse it", d.ID)
		}
		if len(d.Keys) > MaxDeviceKeys {
			add(at+".keys", "a device has at most %d keys, got %d", MaxDeviceKeys, len(d.Keys))
		}
		for k, key := range d.Keys {
			kat := fmt.Sprintf("%s.keys[%d]", at, k)
			switch {
			case (key.PEM == "") == (key.File == ""):
				add(kat, "needs exactly one of pem and file")
			case key.PEM != "":
				if _, err := parseDeviceKeys([]byte(key.PEM)); err != nil {
					add(kat+".pem", "%v", err)
				}
			}
		}
	}
	return errs
}

// checkHTTPS returns "" for an https URL, or for http on a loopback host (a local IdP in development and tests).
func checkHTTPS(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.User != nil {
		return fmt.Sprintf("must be an https URL, got %q", raw)
	}
	switch u.Scheme {
	case "https":
		return ""
	case "http":
		if isLoopback(u.Hostname()) {
			return ""
		}
		return fmt.Sprintf("must be an https URL (http is allowed only on loopback), got %q", raw)
	}
	return fmt.Sprintf("must be an https URL, got %q", raw)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func validHost(h string) bool {
	if h == "" || strings.ContainsAny(h, "/:?#@ ") {
		return false
	}
	u, err := url.Parse("https://" + h)
	return err == nil && u.Host == h
}

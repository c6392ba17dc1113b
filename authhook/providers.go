package authhook

import (
	"fmt"
	"net"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"github.com/idmq/idmq/internal/fielderr"
)

// typeSettings is the part of a ProviderConfig that belongs to its type: one struct per type, holding exactly
// the keys that type takes, tagged as in ProviderConfig. settingsOf fills it and refuses a key set for
// another type, so a type's validate sees its own fields only (the model is vault-plugin-auth-jwt's one
// config type per provider).
type typeSettings interface {
	// validate reports the type's problems, with paths relative to the provider entry.
	validate(errs *problems)
	// resolve expands the type into what the generic verifier needs. Generic fields set in the config win
	// over what a preset derives.
	resolve(name string) providerSpec
}

// misplacedExplainer lets a type say why a key of other types does not apply to it, where "only applies to
// type X" would leave the user guessing.
type misplacedExplainer interface {
	misplaced(key string) string
}

// providerTypes lists the types in the order error messages name them.
var providerTypes = []struct {
	name string
	new  func() typeSettings
}{
	{TypeOIDC, func() typeSettings { return new(oidcSettings) }},
	{TypeClerk, func() typeSettings { return new(clerkSettings) }},
	{TypeAuth0, func() typeSettings { return new(auth0Settings) }},
	{TypeSupabase, func() typeSettings { return new(supabaseSettings) }},
	{TypeFirebase, func() typeSettings { return new(firebaseSettings) }},
	{TypeLocal, func() typeSettings { return new(localSettings) }},
	{TypeDevices, func() typeSettings { return new(devicesSettings) }},
}

var (
	// typeFields maps a type to the yaml key -> field index of its struct.
	typeFields = map[string]map[string][]int{}
	// keyTypes maps a yaml key to the types that take it, in providerTypes order.
	keyTypes = map[string][]string{}
	// providerKeys are ProviderConfig's fields, in declaration order, except name and type.
	providerKeys []providerKey
)

type providerKey struct {
	name  string
	index int
}

func init() {
	for _, pt := range providerTypes {
		fields := map[string][]int{}
		for _, f := range reflect.VisibleFields(reflect.TypeOf(pt.new()).Elem()) {
			if key := yamlKey(f); key != "" && !f.Anonymous {
				fields[key] = f.Index
				keyTypes[key] = append(keyTypes[key], pt.name)
			}
		}
		typeFields[pt.name] = fields
	}
	t := reflect.TypeOf(ProviderConfig{})
	for i := range t.NumField() {
		if key := yamlKey(t.Field(i)); key != "name" && key != "type" {
			providerKeys = append(providerKeys, providerKey{key, i})
		}
	}
}

func yamlKey(f reflect.StructField) string {
	key, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	return key
}

// settingsOf copies the fields set in p into the struct of p's type. A field that type does not take is a
// problem naming the types that do. The result is nil for an unknown type.
func settingsOf(p *ProviderConfig) (typeSettings, problems) {
	var tc typeSettings
	for _, pt := range providerTypes {
		if pt.name == p.Type {
			tc = pt.new()
		}
	}
	if tc == nil {
		return nil, nil // the keys cannot be judged before the type is known: validateProvider names the type
	}
	var errs problems
	src := reflect.ValueOf(p).Elem()
	for _, k := range providerKeys {
		v := src.Field(k.index)
		if v.IsZero() || (v.Kind() == reflect.Slice && v.Len() == 0) {
			continue
		}
		if idx, ok := typeFields[p.Type][k.name]; ok {
			reflect.ValueOf(tc).Elem().FieldByIndex(idx).Set(v)
			continue
		}
		msg := "only applies to type " + strings.Join(keyTypes[k.name], " or ")
		if me, ok := tc.(misplacedExplainer); ok {
			if why := me.misplaced(k.name); why != "" {
				msg = why
			}
		}
		errs.add(k.name, "%s", msg)
	}
	return tc, errs
}

// validateProvider checks one provider entry; paths are relative to it.
func validateProvider(p *ProviderConfig) []*FieldError {
	tc, errs := settingsOf(p)
	switch {
	case p.Type == "":
		errs.add("type", "is required: one of %s", strings.Join(typeNames(), ", "))
	case tc == nil:
		errs.add("type", "must be one of %s, got %q", strings.Join(typeNames(), ", "), p.Type)
	default:
		tc.validate(&errs)
	}
	return errs
}

// resolveProvider expands a provider into the generic settings its verifier needs.
func resolveProvider(p ProviderConfig) (providerSpec, error) {
	tc, _ := settingsOf(&p)
	if tc == nil {
		return providerSpec{name: p.Name, typ: p.Type}, fmt.Errorf("authhook: provider %q: unknown type %q", p.Name, p.Type)
	}
	s := tc.resolve(p.Name)
	s.typ = p.Type
	if len(s.issuers) == 0 && p.Type != TypeDevices { // devices tokens have no iss
		return s, fmt.Errorf("authhook: provider %q has no issuer", p.Name)
	}
	return s, nil
}

func typeNames() []string {
	names := make([]string, len(providerTypes))
	for i, pt := range providerTypes {
		names[i] = pt.name
	}
	return names
}

// problems collects field errors.
type problems []*FieldError

func (ps *problems) add(path, format string, args ...any) {
	*ps = append(*ps, fielderr.New(path, format, args...))
}

var (
	providerName  = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
	attributeName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)
	// Attribute names the ACL provides itself; a mapping onto them would be shadowed or shadow them.
	reservedAttributes  = []string{"username", "client_id", "provider", "subject"}
	publicKeyAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)

// checkAlgorithms refuses none, HMAC unless hmac (a supabase provider with jwt_secret), and unknown names.
func checkAlgorithms(errs *problems, algorithms []string, hmac bool) {
	for i, a := range algorithms {
		at := fmt.Sprintf("algorithms[%d]", i)
		switch {
		case strings.EqualFold(a, "none"):
			errs.add(at, "\"none\" is never accepted")
		case strings.HasPrefix(a, "HS"):
			if !hmac {
				errs.add(at, "%s is an HMAC algorithm: only a supabase provider with jwt_secret may use it (a provider with public keys must never accept HMAC)", a)
			}
		case !slices.Contains(publicKeyAlgorithms, a):
			errs.add(at, "unknown algorithm %q (one of %s)", a, strings.Join(publicKeyAlgorithms, ", "))
		}
	}
}

func checkAudiences(errs *problems, audiences []string) {
	for i, a := range audiences {
		if a == "" {
			errs.add(fmt.Sprintf("audiences[%d]", i), "must not be empty")
		}
	}
}

func checkUsernamePrefix(errs *problems, prefix string) {
	if prefix != "" && !safeUsername(prefix) {
		errs.add("username_prefix", "must not contain '+', '#', '/', control characters or start with '$', got %q", prefix)
	}
}

// checkClaims holds claim mappings to vault-plugin-auth-jwt's rule: at load, never onto a reserved or an
// already mapped attribute.
func checkClaims(errs *problems, claims []ClaimMapping) {
	seen := map[string]int{}
	for i, m := range claims {
		at := fmt.Sprintf("claims[%d]", i)
		checkClaimPath(errs, at+".path", m.Path)
		switch {
		case !attributeName.MatchString(m.Attribute):
			errs.add(at+".attribute", "must be a letter or '_' followed by letters, digits or '_', got %q", m.Attribute)
		case slices.Contains(reservedAttributes, m.Attribute):
			errs.add(at+".attribute", "%q is reserved (%s are always available)", m.Attribute, strings.Join(reservedAttributes, ", "))
		default:
			if j, dup := seen[m.Attribute]; dup {
				errs.add(at+".attribute", "%q is already mapped by claims[%d]", m.Attribute, j)
			}
			seen[m.Attribute] = i
		}
		if m.Required && m.Default != "" {
			errs.add(at+".default", "a required claim cannot have a default")
		}
	}
}

// checkClaimPath refuses a claim path that could never match: empty, a dotted path with an empty part, or a
// malformed JSON Pointer.
func checkClaimPath(errs *problems, at, path string) {
	if strings.HasPrefix(path, "/") {
		if _, err := pointerKeys(path); err != nil {
			errs.add(at, "JSON Pointer %q: %v (e.g. /https:~1~1example.com~1roles for the key \"https://example.com/roles\")", path, err)
		}
		return
	}
	if path == "" || strings.HasPrefix(path, ".") || strings.HasSuffix(path, ".") || strings.Contains(path, "..") {
		errs.add(at, "must be a claim name, a dotted path like app_metadata.plan, or a JSON Pointer like /app_metadata/plan, got %q", path)
	}
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

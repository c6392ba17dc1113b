package authhook

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
)

// FuzzMapIdentity maps arbitrary JSON claims with an arbitrary mapping configuration and holds the result to
// the mapping rules:
//   - a mapping onto a reserved, malformed or duplicate attribute name is refused by config validation,
//     with the error naming claims[i].attribute; nothing else about the attribute is refused;
//   - a valid mapping gives either a *Error (missing_claim or malformed, naming the claim at fault, in the
//     order username, claims[], topics_claim) or an Identity in which
//   - the username is the prefix plus the username claim, percent-escaped so that it holds no '+', '#',
//     '/', control character or leading '$', and decodes back to the claim (lower-cased when it is the
//     email); it is at most 3 bytes per claim byte;
//   - each attribute is exactly its claim rendered as a string (strings, numbers as written, booleans),
//     its default when the claim is absent or neither a scalar nor a list of scalars (a list attribute),
//     and nothing else: no unmapped or reserved name ever appears;
//   - grants are the topics claim's filters, in a fixed order ("pub" before "publish", "sub" before
//     "subscribe"), and sub, jti and exp are carried over.
//
// Seeds are in testdata/fuzz/FuzzMapIdentity.
func FuzzMapIdentity(f *testing.F) {
	f.Fuzz(func(t *testing.T, claimsJSON []byte, mapping string) {
		pc := parseMappingSpec(mapping)
		if errs := validateProvider(&pc); len(errs) > 0 {
			checkMappingRefusal(t, pc, errs)
			return
		}
		checkMappingRefusal(t, pc, nil)
		spec, err := resolveProvider(pc)
		if err != nil {
			t.Fatalf("a validated provider does not resolve: %v", err)
		}
		dec := json.NewDecoder(bytes.NewReader(claimsJSON))
		dec.UseNumber() // as the token parser does (jwt.WithJSONNumber)
		var claims jwt.MapClaims
		if dec.Decode(&claims) != nil || claims == nil {
			return // not a JSON object: the token parser refuses it before any mapping
		}
		id, err := mapIdentity(&spec, claims)
		want, wantErr := referenceMapping(&spec, claims)
		if wantErr != nil {
			var e *Error
			if !errors.As(err, &e) || e.Reason != wantErr.Reason || e.Claim != wantErr.Claim {
				t.Fatalf("mapIdentity = %+v, %v; want a %s error naming %q", id, err, wantErr.Reason, wantErr.Claim)
			}
			if limit := 256 + len(mapping); len(err.Error()) > limit {
				t.Fatalf("error message of %d bytes (limit %d): %.200q", len(err.Error()), limit, err.Error())
			}
			return
		}
		if err != nil {
			t.Fatalf("mapIdentity refused claims the mapping accepts: %v\nclaims %s", err, claimsJSON)
		}
		checkUsername(t, id.Username, spec.prefix, want.rawUsername)
		if id.Provider != spec.name || id.Subject != want.Subject || id.TokenID != want.TokenID {
			t.Fatalf("provider/sub/jti = %q/%q/%q, want %q/%q/%q", id.Provider, id.Subject, id.TokenID, spec.name, want.Subject, want.TokenID)
		}
		if want.exp != nil && !id.ExpiresAt.Equal(*want.exp) {
			t.Fatalf("ExpiresAt = %v, want the token's exp %v", id.ExpiresAt, *want.exp)
		}
		if !reflect.DeepEqual(id.Attributes, want.Attributes) {
			t.Fatalf("attributes = %q, want %q\nclaims %s", id.Attributes, want.Attributes, claimsJSON)
		}
		for name := range id.Attributes {
			if slices.Contains(reservedAttributes, name) || !slices.ContainsFunc(spec.claims, func(m ClaimMapping) bool { return m.Attribute == name }) {
				t.Fatalf("attribute %q is reserved or not mapped", name)
			}
		}
		if !sameGrants(id.Grants, want.Grants) {
			t.Fatalf("grants = %+v, want %+v", id.Grants, want.Grants)
		}
	})
}

// parseMappingSpec reads a provider's mapping from lines: "u=claim" (username_claim), "p=prefix"
// (username_prefix), "t=claim" (topics_claim), "k=clerk" (the clerk preset: email, then sub), and
// "c=path>attribute" mappings, optionally followed by "!" (required) or "=default".
func parseMappingSpec(spec string) ProviderConfig {
	pc := ProviderConfig{Name: "fuzz", Type: TypeOIDC, Issuer: "https://idp.example.com"}
	for _, line := range strings.Split(spec, "\n") {
		kind, value, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		switch kind {
		case "u":
			pc.UsernameClaim = value
		case "p":
			pc.UsernamePrefix = value
		case "t":
			pc.TopicsClaim = value
		case "k":
			if value == "clerk" {
				pc.Type, pc.Issuer, pc.Domains = TypeClerk, "", []string{"fuzz.clerk.accounts.dev"}
			}
		case "c":
			path, attr, _ := strings.Cut(value, ">")
			m := ClaimMapping{Path: path, Attribute: attr}
			if a, def, ok := strings.Cut(attr, "="); ok {
				m.Attribute, m.Default = a, def
			} else if a, ok := strings.CutSuffix(attr, "!"); ok {
				m.Attribute, m.Required = a, true
			}
			pc.Claims = append(pc.Claims, m)
		}
	}
	return pc
}

// checkMappingRefusal holds validation to the naming rules: claims[i].attribute is refused exactly when
// the name is malformed, reserved, or mapped already.
func checkMappingRefusal(t *testing.T, pc ProviderConfig, errs []*FieldError) {
	t.Helper()
	var got, want []int
	for _, e := range errs {
		var i int
		if n, _ := fmt.Sscanf(e.Path, "claims[%d].attribute", &i); n == 1 && strings.HasSuffix(e.Path, ".attribute") {
			got = append(got, i)
		}
	}
	seen := map[string]bool{}
	for i, m := range pc.Claims {
		wellFormed := len(m.Attribute) >= 1 && len(m.Attribute) <= 63 && !('0' <= m.Attribute[0] && m.Attribute[0] <= '9') &&
			strings.Trim(m.Attribute, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") == ""
		reserved := m.Attribute == "username" || m.Attribute == "client_id" || m.Attribute == "provider" || m.Attribute == "subject"
		if !wellFormed || reserved || seen[m.Attribute] {
			want = append(want, i)
		}
		if wellFormed && !reserved {
			seen[m.Attribute] = true
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("attribute names refused at %v, want %v (mappings %+v)", got, want, pc.Claims)
	}
}

// mappedIdentity is what the reference expects.
type mappedIdentity struct {
	Identity
	rawUsername string
	exp         *time.Time
}

// referenceMapping applies the documented mapping rules to claims.
func referenceMapping(spec *providerSpec, claims map[string]any) (*mappedIdentity, *Error) {
	lookup := func(path string) (any, bool) {
		if v, ok := claims[path]; ok {
			return v, true
		}
		var cur any = claims
		for _, p := range strings.Split(path, ".") {
			obj, ok := cur.(map[string]any)
			if !ok {
				return nil, false
			}
			if cur, ok = obj[p]; !ok {
				return nil, false
			}
		}
		return cur, strings.Contains(path, ".")
	}
	render := func(v any) (string, bool) {
		switch x := v.(type) {
		case string:
			return x, true
		case json.Number:
			return string(x), true
		case bool:
			return strconv.FormatBool(x), true
		}
		return "", false
	}
	want := &mappedIdentity{}
	want.Subject, _ = claims["sub"].(string)
	want.TokenID, _ = claims["jti"].(string)
	if n, ok := claims["exp"].(json.Number); ok {
		if f, err := strconv.ParseFloat(string(n), 64); err == nil && f >= 0 && f < 1e15 {
			exp := time.Unix(int64(f), 0)
			want.exp = &exp
		}
	}
	for _, c := range spec.usernameClaims {
		if v, ok := lookup(c); ok {
			if s, ok := v.(string); ok && s != "" {
				want.rawUsername = s
				if c == "email" {
					want.rawUsername = strings.ToLower(s)
				}
				break
			}
		}
	}
	if want.rawUsername == "" {
		return nil, &Error{Reason: ReasonMissingClaim, Claim: spec.usernameClaims[0]}
	}
	for _, m := range spec.claims {
		v, present := lookup(m.Path)
		s, scalar := render(v)
		if arr, isArr := v.([]any); present && isArr && !slices.ContainsFunc(arr, func(x any) bool { _, ok := render(x); return !ok }) {
			continue // a list of scalars is a list attribute (Identity.Lists), not an attribute
		}
		switch {
		case present && scalar:
		case m.Required:
			return nil, &Error{Reason: ReasonMissingClaim, Claim: m.Path}
		case m.Default != "":
			s = m.Default
		default:
			continue
		}
		if want.Attributes == nil {
			want.Attributes = map[string]string{}
		}
		want.Attributes[m.Attribute] = s
	}
	if spec.topicsClaim != "" {
		if v, ok := lookup(spec.topicsClaim); ok {
			g, ok := referenceGrants(v)
			if !ok {
				return nil, &Error{Reason: ReasonMalformed, Claim: spec.topicsClaim}
			}
			want.Grants = g
		}
	}
	return want, nil
}

func referenceGrants(v any) (TopicGrants, bool) {
	filters := func(v any) ([]string, bool) {
		list, ok := v.([]any)
		if !ok {
			return nil, false
		}
		out := []string{}
		for _, f := range list {
			s, ok := f.(string)
			if !ok || s == "" {
				return nil, false
			}
			out = append(out, s)
		}
		return out, true
	}
	var g TopicGrants
	if all, ok := filters(v); ok {
		g.All = all
		return g, true
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return g, false
	}
	for _, k := range slices.Sorted(maps.Keys(obj)) {
		list, ok := filters(obj[k])
		if !ok {
			return g, false
		}
		switch k {
		case "publish", "pub":
			g.Publish = append(g.Publish, list...)
		case "subscribe", "sub":
			g.Subscribe = append(g.Subscribe, list...)
		case "all":
			g.All = append(g.All, list...)
		default:
			return g, false
		}
	}
	return g, true
}

// sameGrants compares grant lists in order (an empty list equals none): a grant's index names it in ACL
// decisions, so it must not change from one verification to the next.
func sameGrants(a, b TopicGrants) bool {
	same := func(x, y []string) bool { return slices.Equal(x, y) }
	return same(a.Publish, b.Publish) && same(a.Subscribe, b.Subscribe) && same(a.All, b.All)
}

// checkUsername holds a mapped username to the escaping rules: safe for topics, decodable back to the
// claim, and bounded.
func checkUsername(t *testing.T, username, prefix, raw string) {
	t.Helper()
	escaped, ok := strings.CutPrefix(username, prefix)
	if !ok {
		t.Fatalf("username %q lacks the prefix %q", username, prefix)
	}
	if !utf8.ValidString(username) || strings.HasPrefix(username, "$") {
		t.Fatalf("username %q is invalid UTF-8 or starts with '$'", username)
	}
	for _, r := range username {
		if r == '+' || r == '#' || r == '/' || unicode.IsControl(r) {
			t.Fatalf("username %q holds %q", username, r)
		}
	}
	if len(escaped) > 3*len(raw) {
		t.Fatalf("username of %d bytes for a claim of %d", len(escaped), len(raw))
	}
	var decoded []byte
	for i := 0; i < len(escaped); i++ {
		if escaped[i] != '%' {
			decoded = append(decoded, escaped[i])
			continue
		}
		b, err := strconv.ParseUint(escaped[i+1:min(i+3, len(escaped))], 16, 8)
		if err != nil || i+3 > len(escaped) {
			t.Fatalf("username %q has a malformed escape at %d", username, i)
		}
		decoded = append(decoded, byte(b))
		i += 2
	}
	if string(decoded) != raw {
		t.Fatalf("username %q decodes to %q, not the claim %q", username, decoded, raw)
	}
}

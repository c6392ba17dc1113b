package authhook

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/golang-jwt/jwt/v5"
)

// claimAt finds a claim by name, by dotted path into nested objects, or by JSON Pointer (RFC 6901, a path
// starting with '/'), which reaches keys containing dots or slashes: "/https:~1~1example.com~1app/plan.v2" is
// key "plan.v2" inside claim "https://example.com/app". For a name or dotted path the whole name is tried
// first, so namespaced claims such as "https://example.com/org" (Auth0) are found as they are.
func claimAt(claims map[string]any, path string) (any, bool) {
	if strings.HasPrefix(path, "/") {
		keys, err := pointerKeys(path)
		if err != nil {
			return nil, false // refused at load (checkClaimPath)
		}
		return walkClaims(claims, keys)
	}
	if v, ok := claims[path]; ok {
		return v, true
	}
	if !strings.Contains(path, ".") {
		return nil, false
	}
	return walkClaims(claims, strings.Split(path, "."))
}

// pointerKeys splits a JSON Pointer into its keys, "~1" and "~0" unescaped to '/' and '~'.
func pointerKeys(pointer string) ([]string, error) {
	if !strings.HasPrefix(pointer, "/") {
		return nil, fmt.Errorf("a JSON Pointer starts with '/'")
	}
	keys := strings.Split(pointer[1:], "/")
	for i, k := range keys {
		if k == "" {
			return nil, fmt.Errorf("key %d is empty", i)
		}
		for j := 0; j < len(k); j++ {
			if k[j] == '~' && (j+1 == len(k) || (k[j+1] != '0' && k[j+1] != '1')) {
				return nil, fmt.Errorf("'~' must be followed by 0 ('~') or 1 ('/') in %q", k)
			}
		}
		keys[i] = strings.ReplaceAll(strings.ReplaceAll(k, "~1", "/"), "~0", "~")
	}
	return keys, nil
}

// walkClaims follows keys through nested objects.
func walkClaims(claims map[string]any, parts []string) (any, bool) {
	cur := claims
	for i, part := range parts {
		v, ok := cur[part]
		if !ok {
			return nil, false
		}
		if i == len(parts)-1 {
			return v, true
		}
		if cur, ok = v.(map[string]any); !ok {
			return nil, false
		}
	}
	return nil, false
}

// scalarString renders a claim usable as an attribute; objects, arrays and null are not.
func scalarString(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case json.Number:
		return x.String(), true
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), true
	case bool:
		return strconv.FormatBool(x), true
	}
	return "", false
}

// scalarList renders an array of scalars as a list attribute; any other value is not one.
func scalarList(v any) ([]string, bool) {
	arr, ok := v.([]any)
	if !ok {
		return nil, false
	}
	out := make([]string, 0, len(arr))
	for _, x := range arr {
		s, ok := scalarString(x)
		if !ok {
			return nil, false
		}
		out = append(out, s)
	}
	return out, true
}

// mapIdentity builds the Identity of a verified token from the provider's mapping rules. t records, for
// Explain, where the username, each attribute and the grants came from.
func mapIdentity(spec *providerSpec, claims jwt.MapClaims) (*Identity, error) {
	return mapIdentityTraced(spec, claims, nil)
}

func mapIdentityTraced(spec *providerSpec, claims jwt.MapClaims, t *trace) (*Identity, error) {
	id := &Identity{Provider: spec.name}
	id.Subject, _ = claims["sub"].(string)
	id.TokenID, _ = claims["jti"].(string)
	if exp, err := claims.GetExpirationTime(); err == nil && exp != nil {
		id.ExpiresAt = exp.Time
	}
	if iat, err := claims.GetIssuedAt(); err == nil && iat != nil {
		id.IssuedAt = iat.Time
	}

	var username, from string
	for _, c := range spec.usernameClaims {
		if v, ok := claimAt(claims, c); ok {
			if s, ok := v.(string); ok && s != "" {
				username, from = s, c
				break
			}
		}
	}
	if username == "" {
		return nil, missingClaim(spec.usernameClaims[0])
	}
	raw := username
	if from == "email" {
		username = strings.ToLower(username) // an email used as username is case-insensitive
	}
	id.Username = spec.prefix + escapeUsername(username)
	if t != nil {
		t.usernameFrom = usernameDerivation(spec, from, raw, id.Username)
	}

	if err := mapAttributes(spec, claims, id, t); err != nil {
		return nil, err
	}

	if spec.topicsClaim != "" {
		if v, ok := claimAt(claims, spec.topicsClaim); ok {
			g, err := parseGrants(v)
			if err != nil {
				return nil, &Error{Reason: ReasonMalformed, Claim: spec.topicsClaim, Message: "claim " + strconvQuote(spec.topicsClaim) + " " + err.Error()}
			}
			id.Grants = g
		}
		if t != nil {
			t.grantsFrom = "claim " + spec.topicsClaim
		}
	}
	if t != nil {
		t.pass("claims", "the username and every required claim are present")
	}
	return id, nil
}

// mapAttributes sets id's attributes and list attributes from the provider's claim mappings.
func mapAttributes(spec *providerSpec, claims jwt.MapClaims, id *Identity, t *trace) error {
	for _, m := range spec.claims {
		v, ok := claimAt(claims, m.Path)
		s, scalar := scalarString(v)
		defaulted := false
		if list, isList := scalarList(v); ok && isList {
			if id.Lists == nil {
				id.Lists = map[string][]string{}
			}
			id.Lists[m.Attribute] = list
			if t != nil {
				t.attrs = append(t.attrs, ExplainedAttribute{Name: m.Attribute, Values: list, Set: true, Source: "claim " + m.Path + " (a list)"})
			}
			continue
		}
		switch {
		case ok && scalar:
		case m.Required:
			return missingClaim(m.Path)
		case m.Default != "":
			s, defaulted = m.Default, true
		default:
			if t != nil {
				t.attrs = append(t.attrs, ExplainedAttribute{Name: m.Attribute, Source: "claim " + m.Path + " absent, or neither a scalar nor a list of scalars; no default: not set"})
			}
			continue
		}
		if id.Attributes == nil {
			id.Attributes = make(map[string]string, len(spec.claims))
		}
		id.Attributes[m.Attribute] = s
		if t != nil {
			source := "claim " + m.Path
			if defaulted {
				source = "default: claim " + m.Path + " absent, or neither a scalar nor a list of scalars"
			}
			t.attrs = append(t.attrs, ExplainedAttribute{Name: m.Attribute, Value: s, Set: true, Source: source})
		}
	}
	return nil
}

// usernameDerivation says, for Explain, how a claim value became the username.
func usernameDerivation(spec *providerSpec, from, raw, username string) string {
	out := fmt.Sprintf("claim %q (first present of %s)", from, strings.Join(spec.usernameClaims, ", "))
	folded := raw
	if from == "email" {
		folded = strings.ToLower(raw)
	}
	if folded != raw {
		out += ", lower-cased (an email is case-insensitive)"
	}
	if escapeUsername(folded) != folded {
		out += fmt.Sprintf(", percent-encoded from %q ('+', '#', '/', '%%', control characters and a leading '$' never reach a topic)", clip(folded))
	}
	if spec.prefix != "" {
		out += fmt.Sprintf(", prefixed with %q (username_prefix)", spec.prefix)
	}
	return out
}

// parseGrants reads topic grants: a list of filters (publish and subscribe) or an object with "publish",
// "subscribe" and "all" lists ("pub" and "sub" also accepted).
func parseGrants(v any) (TopicGrants, error) {
	var g TopicGrants
	switch x := v.(type) {
	case []any:
		all, err := stringList(x)
		g.All = all
		return g, err
	case map[string]any:
		// Sorted, so that "publish" and "pub" together concatenate in one order and a grant's index (named
		// in ACL decisions and logs) is the same on every verification of the same token.
		for _, k := range slices.Sorted(maps.Keys(x)) {
			list, ok := x[k].([]any)
			if !ok {
				return g, errGrants
			}
			filters, err := stringList(list)
			if err != nil {
				return g, err
			}
			switch k {
			case "publish", "pub":
				g.Publish = append(g.Publish, filters...)
			case "subscribe", "sub":
				g.Subscribe = append(g.Subscribe, filters...)
			case "all":
				g.All = append(g.All, filters...)
			default:
				return g, errGrants
			}
		}
		return g, nil
	}
	return g, errGrants
}

var errGrants = &grantsError{}

type grantsError struct{}

func (*grantsError) Error() string {
	return `must be a list of topic filters or an object of "publish", "subscribe" and "all" lists`
}

func stringList(in []any) ([]string, error) {
	out := make([]string, 0, len(in))
	for _, v := range in {
		s, ok := v.(string)
		if !ok || s == "" {
			return nil, errGrants
		}
		out = append(out, s)
	}
	return out, nil
}

func strconvQuote(s string) string { return strconv.Quote(clip(s)) }

// grantsClaim is the claim shape Mint writes; parseGrants reads it back.
func grantsClaim(g TopicGrants) map[string][]string {
	m := map[string][]string{}
	if len(g.Publish) > 0 {
		m["publish"] = g.Publish
	}
	if len(g.Subscribe) > 0 {
		m["subscribe"] = g.Subscribe
	}
	if len(g.All) > 0 {
		m["all"] = g.All
	}
	return m
}

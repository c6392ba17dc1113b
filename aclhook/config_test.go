package aclhook

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func decodeConfig(t *testing.T, src string) (Config, error) {
	t.Helper()
	var c Config
	dec := yaml.NewDecoder(bytes.NewBufferString(src))
	dec.KnownFields(true)
	err := dec.Decode(&c)
	return c, err
}

func TestConfigDecode(t *testing.T) {
	c, err := decodeConfig(t, `
rules:
  - {topic: "users/%u/#", access: pubsub}
  - {topic: "devices/%c/events/#", access: publish}
  - {topic: "orgs/%{org_id}/broadcast", access: subscribe}
  - {topic: "#", access: pubsub, when: {role: admin}}
  - {topic: "premium/#", access: subscribe, when: {plan: [premium, enterprise]}}
  - {topic: "secret/#", access: deny}
`)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Rules: []Rule{
		{Topic: "users/%u/#", Access: AccessPubSub},
		{Topic: "devices/%c/events/#", Access: AccessPublish},
		{Topic: "orgs/%{org_id}/broadcast", Access: AccessSubscribe},
		{Topic: "#", Access: AccessPubSub, When: map[string]OneOf{"role": {"admin"}}},
		{Topic: "premium/#", Access: AccessSubscribe, When: map[string]OneOf{"plan": {"premium", "enterprise"}}},
		{Topic: "secret/#", Access: AccessDeny},
	}}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("decoded %+v\nwant    %+v", c, want)
	}
	warnings, err := c.Validate([]string{"org_id", "role", "plan"})
	if err != nil || len(warnings) != 0 {
		t.Fatalf("Validate: warnings %q, err %v", warnings, err)
	}
	out, err := yaml.Marshal(c)
	if err != nil || !strings.Contains(string(out), "access: pubsub") {
		t.Fatalf("marshal: %v\n%s", err, out)
	}
}

func TestConfigDecodeErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want string
	}{
		{"unknown access", "rules:\n  - {topic: a, access: pub}\n", `line 2: aclhook: unknown access "pub" (want publish, subscribe, pubsub or deny)`},
		{"when is a map", "rules:\n  - {topic: a, access: deny, when: {role: {x: y}}}\n", "line 2: aclhook: a `when` condition takes a value or a list of values"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeConfig(t, tt.src)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestValidateErrors(t *testing.T) {
	tests := []struct {
		name    string
		rule    Rule
		path    string
		target  error
		message string
	}{
		{"invalid filter", Rule{Topic: "a/#/b", Access: AccessDeny}, "rules[1].topic", ErrInvalidFilter, `rules[1].topic: aclhook: invalid topic filter "a/#/b": '#' must be a whole level and the last one`},
		{"plus inside level", Rule{Topic: "a/%u+", Access: AccessDeny}, "rules[1].topic", ErrInvalidFilter, `'+' must be a whole level`},
		{"unknown placeholder", Rule{Topic: "users/%x", Access: AccessDeny}, "rules[1].topic", ErrUnknownPlaceholder, `rules[1].topic: aclhook: unknown placeholder "%x" in "users/%x" (want %u, %c, %{name} or %%)`},
		{"unterminated attribute", Rule{Topic: "orgs/%{org", Access: AccessDeny}, "rules[1].topic", ErrUnknownPlaceholder, "unterminated"},
		{"bad attribute name", Rule{Topic: "orgs/%{a b}", Access: AccessDeny}, "rules[1].topic", ErrUnknownPlaceholder, `"%{a b}"`},
		{"lone percent", Rule{Topic: "a/%", Access: AccessDeny}, "rules[1].topic", ErrUnknownPlaceholder, "lone"},
		{"empty topic", Rule{Topic: "", Access: AccessDeny}, "rules[1].topic", ErrInvalidFilter, "empty filter"},
		{"shared topic", Rule{Topic: "$share/g/a", Access: AccessDeny}, "rules[1].topic", ErrInvalidFilter, "$share"},
		{"missing access", Rule{Topic: "a"}, "rules[1].access", ErrUnknownAccess, "rules[1].access: aclhook: unknown access: missing or invalid"},
		{"empty condition", Rule{Topic: "a", Access: AccessDeny, When: map[string]OneOf{"role": {}}}, "rules[1].when.role", ErrEmptyCondition, "list at least one value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Config{Rules: []Rule{{Topic: "ok/#", Access: AccessPubSub}, tt.rule}}
			_, err := c.Validate([]string{"role"})
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v does not name a field", err)
			}
			if fe.Path != tt.path {
				t.Errorf("Path = %q, want %q", fe.Path, tt.path)
			}
			if !errors.Is(err, tt.target) {
				t.Errorf("error %v is not %v", err, tt.target)
			}
			if !strings.Contains(err.Error(), tt.message) || !strings.HasPrefix(err.Error(), tt.path+": ") {
				t.Errorf("error %q, want prefix %q and to contain %q", err, tt.path+": ", tt.message)
			}
			if _, err := NewRules(c); err == nil {
				t.Error("NewRules accepted an invalid config")
			}
		})
	}
}

func TestValidateReportsEveryError(t *testing.T) {
	c := Config{Rules: []Rule{{Topic: "a/#/b", Access: AccessPubSub}, {Topic: "ok"}}}
	_, err := c.Validate(nil)
	multi, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("error %v does not hold several errors", err)
	}
	var paths []string
	for _, e := range multi.Unwrap() {
		paths = append(paths, e.(*FieldError).Path)
	}
	if want := []string{"rules[0].topic", "rules[1].access"}; !reflect.DeepEqual(paths, want) {
		t.Errorf("paths %q, want %q", paths, want)
	}
}

func TestValidateWarnings(t *testing.T) {
	c := Config{Rules: []Rule{
		{Topic: "orgs/%{org_id}/#", Access: AccessSubscribe},
		{Topic: "#", Access: AccessPubSub, When: map[string]OneOf{"role": {"admin"}, "tier": {"gold"}}},
	}}
	warnings, err := c.Validate([]string{"role"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`rules[0].topic: placeholder %{org_id} names an attribute no provider maps; the rule never applies`,
		`rules[1].when.tier: attribute "tier" is not mapped by any provider; the rule never applies`,
	}
	if !reflect.DeepEqual(warnings, want) {
		t.Errorf("warnings\n%q\nwant\n%q", warnings, want)
	}
	if w, _ := (Config{}).Validate(nil); len(w) != 1 || !strings.HasPrefix(w[0], "rules: none configured") {
		t.Errorf("empty config warnings %q", w)
	}
}

// TestValidateDenyAction: deny_action is ignore (also when absent) or disconnect; anything else names the field.
func TestValidateDenyAction(t *testing.T) {
	for _, ok := range []DenyAction{"", DenyIgnore, DenyDisconnect} {
		if _, err := (Config{DenyAction: ok}).Validate(nil); err != nil {
			t.Errorf("deny_action %q: %v", ok, err)
		}
	}
	_, err := Config{DenyAction: "drop"}.Validate(nil)
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Path != "deny_action" || !errors.Is(err, ErrUnknownDenyAction) {
		t.Fatalf("deny_action drop: %v, want a FieldError on deny_action wrapping ErrUnknownDenyAction", err)
	}
	if want := `deny_action: aclhook: unknown deny_action "drop" (want ignore or disconnect)`; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
}

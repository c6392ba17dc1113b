package aclhook

import (
	"reflect"
	"testing"
)

func TestTemplateFill(t *testing.T) {
	alice := Subject{
		Username:   "alice",
		ClientID:   "dev-1",
		Attributes: map[string]string{"org_id": "acme", "empty": ""},
	}
	tests := []struct {
		name    string
		subject Subject
		tmpl    string
		widen   bool
		want    []string
		outcome substitution
	}{
		{"no placeholders", alice, "a/+/#", false, []string{"a", "+", "#"}, substituted},
		{"username", alice, "users/%u/#", false, []string{"users", "alice", "#"}, substituted},
		{"client id", alice, "devices/%c/events", false, []string{"devices", "dev-1", "events"}, substituted},
		{"attribute", alice, "orgs/%{org_id}/broadcast", false, []string{"orgs", "acme", "broadcast"}, substituted},
		{"mixed in a level", alice, "x/%u-%c.log", false, []string{"x", "alice-dev-1.log"}, substituted},
		{"percent escape", alice, "rates/100%%/%u", false, []string{"rates", "100%", "alice"}, substituted},
		{"empty levels kept", alice, "/%u//", false, []string{"", "alice", "", ""}, substituted},
		{"absent attribute", alice, "orgs/%{team}/x", false, nil, missingValue},
		{"empty attribute", alice, "orgs/%{empty}/x", false, nil, missingValue},
		{"empty username", Subject{ClientID: "c"}, "users/%u", false, nil, missingValue},
		{"absent value is not widened", alice, "orgs/%{team}/x", true, nil, missingValue},
		{"username with hash", Subject{Username: "a/#"}, "users/%u/#", false, nil, unsafeValue},
		{"username with slash", Subject{Username: "bob/x"}, "users/%u", false, nil, unsafeValue},
		{"client id plus", Subject{ClientID: "+"}, "devices/%c/events", false, nil, unsafeValue},
		{"client id hash inside", Subject{ClientID: "a#b"}, "devices/dev-%c", false, nil, unsafeValue},
		{"nul in value", Subject{Username: "a\x00"}, "users/%u", false, nil, unsafeValue},
		{"dollar first level", Subject{Username: "$SYS"}, "%u/#", false, nil, unsafeValue},
		{"dollar later level is fine", Subject{Username: "$x"}, "users/%u", false, []string{"users", "$x"}, substituted},
		{"literal dollar with value", Subject{Username: "x"}, "$SYS/%u", false, []string{"$SYS", "x"}, substituted},
		{"deny rule widened", Subject{ClientID: "+"}, "devices/%c/config", true, []string{"devices", "+", "config"}, unsafeValue},
		{"deny rule widened slash", Subject{Username: "bob/x"}, "users/%u/#", true, []string{"users", "+", "#"}, unsafeValue},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmpl, err := parseTemplate(tt.tmpl)
			if err != nil {
				t.Fatal(err)
			}
			got, outcome := tmpl.fill(tt.subject, tt.widen)
			if !reflect.DeepEqual(got, tt.want) || outcome != tt.outcome {
				t.Errorf("fill(%q) = %q, %d; want %q, %d", tt.tmpl, got, outcome, tt.want, tt.outcome)
			}
		})
	}
}

func TestTemplateAttributes(t *testing.T) {
	tmpl, err := parseTemplate("orgs/%{org_id}/%u/%{team}-%{org_id}")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := tmpl.attributes(), []string{"org_id", "team", "org_id"}; !reflect.DeepEqual(got, want) {
		t.Errorf("attributes() = %q, want %q", got, want)
	}
	if tmpl.hasPlaceholders() == false {
		t.Error("hasPlaceholders() = false")
	}
	plain, _ := parseTemplate("a/100%%")
	if plain.hasPlaceholders() {
		t.Error("an escaped '%' counted as a placeholder")
	}
}

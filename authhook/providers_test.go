package authhook

import (
	"reflect"
	"testing"
)

// Every ProviderConfig key must belong to some type (else no config could ever use it), and every field of
// a type's settings must be a ProviderConfig key of the same Go type (else settingsOf could not copy it).
func TestSettingsMatchProviderConfig(t *testing.T) {
	keys := map[string]reflect.Type{}
	pc := reflect.TypeOf(ProviderConfig{})
	for i := range pc.NumField() {
		keys[yamlKey(pc.Field(i))] = pc.Field(i).Type
	}
	for _, k := range providerKeys {
		if len(keyTypes[k.name]) == 0 {
			t.Errorf("key %q is taken by no provider type", k.name)
		}
	}
	for _, pt := range providerTypes {
		st := reflect.TypeOf(pt.new()).Elem()
		for key, idx := range typeFields[pt.name] {
			if want, ok := keys[key]; !ok || st.FieldByIndex(idx).Type != want {
				t.Errorf("type %s: key %q is %v, ProviderConfig has %v", pt.name, key, st.FieldByIndex(idx).Type, want)
			}
		}
	}
}

// settingsOf hands each type exactly the keys that were set, so validation and resolution see the config.
func TestSettingsOfCopiesSetKeys(t *testing.T) {
	p := ProviderConfig{Name: "c", Type: TypeClerk, Domains: []string{"a.clerk.dev"}, Audiences: []string{"x"}, UsernamePrefix: "c:"}
	s, errs := settingsOf(&p)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	c := s.(*clerkSettings)
	if !reflect.DeepEqual(c.Domains, p.Domains) || !reflect.DeepEqual(c.Audiences, p.Audiences) || c.UsernamePrefix != "c:" {
		t.Fatalf("settings = %+v", c)
	}
}

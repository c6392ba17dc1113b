package aclhook

import (
	"slices"
	"strings"
	"testing"
)

func TestCovers(t *testing.T) {
	tests := []struct {
		name   string
		filter string
		req    string
		want   bool
	}{
		{"identical literal", "a/b", "a/b", true},
		{"different literal", "a/b", "a/c", false},
		{"plus covers literal", "a/+", "a/b", true},
		{"plus covers plus", "a/+", "a/+", true},
		{"literal does not cover plus", "a/b", "a/+", false},
		{"plus does not cover hash", "a/+", "a/#", false},
		{"hash covers plus", "a/#", "a/+", true},
		{"hash covers deeper plus", "a/#", "a/+/c/+", true},
		{"hash covers hash", "a/#", "a/#", true},
		{"hash covers parent", "a/#", "a", true},
		{"plain does not cover child", "a", "a/b", false},
		{"plain does not cover hash", "a", "a/#", false},
		{"plus/hash does not cover parent", "a/+/#", "a/#", false},
		{"plus/hash covers two levels", "a/+/#", "a/b/#", true},
		{"issue example inside", "users/alice/#", "users/alice/+/temp", true},
		{"issue example outside", "users/alice/#", "users/#", false},
		{"top hash covers everything plain", "#", "x/y/z", true},
		{"plus/hash covers top hash", "+/#", "#", true},
		{"plus/hash does not cover deeper hash parent", "x/+/#", "x/#", false},
		{"plus/plus/hash does not cover top hash", "+/+/#", "#", false},
		{"top hash does not cover dollar", "#", "$SYS/broker", false},
		{"top plus does not cover dollar", "+/broker", "$SYS/broker", false},
		{"top hash does not cover dollar filter", "#", "$SYS/#", false},
		{"literal dollar covers dollar", "$SYS/#", "$SYS/broker/+", true},
		{"dollar rule does not cover all", "$SYS/#", "#", false},
		{"hash covers leading wildcard request", "#", "+/x", true},
		{"empty levels are levels", "a//b", "a//b", true},
		{"plus covers empty level", "a/+/b", "a//b", true},
		{"empty level is not literal", "a//b", "a/x/b", false},
		{"leading slash", "/a", "/a", true},
		{"leading slash plus", "+/a", "/a", true},
		{"trailing slash", "a/", "a/", true},
		{"trailing slash is another level", "a", "a/", false},
		{"hash covers trailing empty", "a/#", "a/", true},
		{"longer request", "a/+", "a/b/c", false},
		{"shorter request", "a/b/c", "a/b", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Covers(tt.filter, tt.req); got != tt.want {
				t.Errorf("Covers(%q, %q) = %v, want %v", tt.filter, tt.req, got, tt.want)
			}
			if brute := subsetByEnumeration(tt.filter, tt.req); brute != tt.want {
				t.Errorf("enumeration says %v for (%q, %q): table row is wrong", brute, tt.filter, tt.req)
			}
		})
	}
}

func TestStripShare(t *testing.T) {
	tests := []struct {
		name   string
		filter string
		want   string
		ok     bool
	}{
		{"not shared", "a/b", "a/b", true},
		{"shared", "$share/g/a/#", "a/#", true},
		{"upper case prefix (mochi accepts it)", "$SHARE/g/a", "a", true},
		{"no group", "$share//a", "", false},
		{"no filter", "$share/g/", "", false},
		{"group only", "$share/g", "", false},
		{"shared dollar topic", "$share/g/$SYS/#", "$SYS/#", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := stripShare(tt.filter)
			if got != tt.want || ok != tt.ok {
				t.Errorf("stripShare(%q) = %q, %v; want %q, %v", tt.filter, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestValidFilter(t *testing.T) {
	tests := []struct {
		name   string
		filter string
		valid  bool
	}{
		{"plain", "a/b", true},
		{"wildcards", "+/a/#", true},
		{"hash alone", "#", true},
		{"hash in the middle", "a/#/b", false},
		{"hash inside a level", "a/b#", false},
		{"plus inside a level", "a/b+/c", false},
		{"empty", "", false},
		{"nul", "a/\x00", false},
		{"shared prefix", "$share/g/a", false},
		{"empty levels", "//", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := validFilter(tt.filter) == ""; got != tt.valid {
				t.Errorf("validFilter(%q) valid = %v, want %v (%s)", tt.filter, got, tt.valid, validFilter(tt.filter))
			}
		})
	}
}

// FuzzSubset checks Covers against its definition: filter covers req exactly when no topic matched
// by req is missed by filter. Topics are enumerated from req, with each wildcard level taking the
// filter's literals, a level in neither filter ("z") and a '$' level; no other value can separate
// the two filters, so the enumeration is exhaustive.
func FuzzSubset(f *testing.F) {
	for _, seed := range [][2]string{
		{"a/#", "a"}, {"a/+", "a/#"}, {"#", "$SYS/#"}, {"$SYS/#", "$SYS/+"}, {"+/+", "a//"},
		{"users/alice/#", "users/alice/+/temp"}, {"users/alice/#", "users/#"}, {"a//b", "a/+/b"},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, filter, req string) {
		if validFilter(filter) != "" || validFilter(req) != "" {
			return
		}
		if strings.Count(filter, "/") > 4 || strings.Count(req, "/") > 4 {
			return // keeps the enumeration small; depth is not where bugs hide
		}
		want := subsetByEnumeration(filter, req)
		if got := Covers(filter, req); got != want {
			t.Fatalf("Covers(%q, %q) = %v; enumeration says %v", filter, req, got, want)
		}
		if !Covers(req, req) {
			t.Fatalf("Covers(%q, %q) = false; every filter covers itself", req, req)
		}
	})
}

// subsetByEnumeration decides the subset relation by brute force with an independent matcher.
func subsetByEnumeration(filter, req string) bool {
	fl := strings.Split(filter, "/")
	var alphabet []string
	for _, l := range fl {
		if l != "+" && l != "#" && !slices.Contains(alphabet, l) {
			alphabet = append(alphabet, l)
		}
	}
	// A level in no filter, plain and '$'-prefixed; it must differ from every literal.
	fresh := "z"
	for slices.Contains(alphabet, fresh) || slices.Contains(alphabet, "$"+fresh) {
		fresh += "z"
	}
	alphabet = append(alphabet, fresh, "$"+fresh)
	maxDepth := len(fl) + 1
	subset := true
	var walk func(rest []string, topic []string)
	walk = func(rest []string, topic []string) {
		if !subset || len(topic) > maxDepth+len(strings.Split(req, "/")) {
			return
		}
		if len(rest) == 0 {
			tn := strings.Join(topic, "/")
			if referenceMatch(req, tn) && !referenceMatch(filter, tn) {
				subset = false
			}
			return
		}
		switch rest[0] {
		case "+":
			for _, v := range alphabet {
				walk(rest[1:], append(slices.Clone(topic), v))
			}
		case "#":
			// '#' matches the parent level and any number of levels below it.
			if len(topic) > 0 {
				walk(nil, topic)
			}
			for depth := 1; len(topic)+depth <= maxDepth; depth++ {
				enumerate(alphabet, depth, func(levels []string) {
					walk(nil, append(slices.Clone(topic), levels...))
				})
			}
		default:
			walk(rest[1:], append(slices.Clone(topic), rest[0]))
		}
	}
	walk(strings.Split(req, "/"), nil)
	return subset
}

func enumerate(alphabet []string, depth int, fn func([]string)) {
	levels := make([]string, depth)
	var rec func(i int)
	rec = func(i int) {
		if i == depth {
			fn(levels)
			return
		}
		for _, v := range alphabet {
			levels[i] = v
			rec(i + 1)
		}
	}
	rec(0)
}

// referenceMatch is plain MQTT topic matching written from the spec, independent of covers.
func referenceMatch(filter, topic string) bool {
	f, t := strings.Split(filter, "/"), strings.Split(topic, "/")
	if strings.HasPrefix(topic, "$") && (f[0] == "+" || f[0] == "#") {
		return false // [MQTT-4.7.2-1]
	}
	for i := range f {
		switch {
		case f[i] == "#":
			return true
		case i >= len(t):
			return false
		case f[i] == "+":
		case f[i] != t[i]:
			return false
		}
	}
	return len(f) == len(t)
}

package events

import (
	"strings"
	"testing"
	"time"
)

func TestNewIDUniqueSortedULIDShaped(t *testing.T) {
	seen := map[string]bool{}
	base := time.Date(2026, 12, 3, 14, 0, 0, 0, time.UTC)
	prev := ""
	for i := range 10000 {
		id := NewID(base.Add(time.Duration(i) * time.Millisecond))
		if len(id) != 26 || strings.Trim(id, crockford) != "" {
			t.Fatalf("id %q is not 26 Crockford base-32 digits", id)
		}
		if seen[id] {
			t.Fatalf("id %q repeated", id)
		}
		if id <= prev {
			t.Fatalf("id %q does not sort after %q, one millisecond earlier", id, prev)
		}
		seen[id], prev = true, id
	}
	// Same millisecond: still unique (80 random bits).
	a, b := NewID(base), NewID(base)
	if a == b || a[:10] != b[:10] {
		t.Fatalf("same-millisecond ids %q %q: want equal time prefix, different randomness", a, b)
	}
}

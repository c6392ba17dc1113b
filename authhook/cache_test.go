package authhook

import (
	"fmt"
	"testing"
	"time"
)

func TestTokenCache(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	id := &Identity{Username: "alice", ExpiresAt: now.Add(time.Minute)}
	tests := []struct {
		name  string
		setup func(c *tokenCache, key *keyHandle)
		token string
		at    time.Time
		hit   bool
	}{
		{name: "hit", token: "tok", at: now, hit: true},
		{name: "other token", token: "tok2", at: now, hit: false},
		{name: "at expiry", token: "tok", at: now.Add(time.Minute), hit: false},
		{name: "key removed", setup: func(c *tokenCache, key *keyHandle) { key.removed.Store(true) }, token: "tok", at: now, hit: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTokenCache(100)
			key := &keyHandle{}
			c.put("tok", id, key, now)
			if tt.setup != nil {
				tt.setup(c, key)
			}
			got := c.get(tt.token, tt.at)
			if (got != nil) != tt.hit {
				t.Fatalf("hit = %v, want %v", got != nil, tt.hit)
			}
			// The same lookup from a packet's bytes.
			if gotBytes := c.getBytes([]byte(tt.token), tt.at); gotBytes != got {
				t.Fatalf("getBytes = %v, get = %v", gotBytes, got)
			}
		})
	}
}

func TestTokenCacheBounded(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	c := newTokenCache(64)
	for i := range 10_000 {
		c.put(fmt.Sprintf("token-%d", i), &Identity{ExpiresAt: now.Add(time.Hour)}, staticHandle, now)
	}
	if n := c.len(); n > 64 {
		t.Fatalf("cache holds %d entries, bound is 64", n)
	}
	if c.get("token-9999", now) == nil {
		t.Fatal("most recent entry missing")
	}
}

func TestTokenCacheDisabled(t *testing.T) {
	c := newTokenCache(-1)
	now := time.Now()
	c.put("tok", &Identity{ExpiresAt: now.Add(time.Hour)}, staticHandle, now)
	if c.get("tok", now) != nil {
		t.Fatal("disabled cache hit")
	}
}

package authhook

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
)

// keyHandle stands for one verification key as it was when a token was verified. A refresh that drops the
// key (or changes the material behind its kid) marks it removed, which evicts every cached token it signed.
type keyHandle struct{ removed atomic.Bool }

// staticHandle is shared by keys that never leave their set (the local issuer's key, an HMAC secret).
var staticHandle = &keyHandle{}

const cacheShards = 16

// tokenCache remembers verified tokens until they expire so reconnect storms skip signature work. Entries are
// found by a seeded hash of the token and confirmed by comparing the token itself, so a hash collision can
// never hand one token's identity to another. The hit path takes a shard read lock and allocates nothing.
type tokenCache struct {
	seed     maphash.Seed
	perShard int
	shards   [cacheShards]cacheShard
}

type cacheShard struct {
	mu sync.RWMutex
	m  map[uint64]*cacheEntry
}

type cacheEntry struct {
	token   string
	id      *Identity
	expires int64 // unix nanoseconds; the token's exp
	key     *keyHandle
}

// newTokenCache returns nil (a cache that never hits) when size < 1.
func newTokenCache(size int) *tokenCache {
	if size < 1 {
		return nil
	}
	c := &tokenCache{seed: maphash.MakeSeed(), perShard: max(1, size/cacheShards)}
	for i := range c.shards {
		c.shards[i].m = make(map[uint64]*cacheEntry)
	}
	return c
}

func (c *tokenCache) get(token string, now time.Time) *Identity {
	if c == nil {
		return nil
	}
	e := c.entry(maphash.String(c.seed, token))
	if e == nil || e.token != token {
		return nil
	}
	return e.live(now)
}

// getBytes is get for a token still in a packet's bytes: it neither copies the token nor allocates.
func (c *tokenCache) getBytes(token []byte, now time.Time) *Identity {
	if c == nil {
		return nil
	}
	e := c.entry(maphash.Bytes(c.seed, token))
	if e == nil || e.token != string(token) {
		return nil
	}
	return e.live(now)
}

func (c *tokenCache) entry(h uint64) *cacheEntry {
	s := &c.shards[h%cacheShards]
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.m[h]
}

// live is the entry's identity, or nil once the token expired or its key left the key set.
func (e *cacheEntry) live(now time.Time) *Identity {
	if now.UnixNano() >= e.expires || e.key.removed.Load() {
		return nil
	}
	return e.id
}

func (c *tokenCache) put(token string, id *Identity, key *keyHandle, now time.Time) {
	if c == nil || id.ExpiresAt.IsZero() || !id.ExpiresAt.After(now) {
		return
	}
	h := maphash.String(c.seed, token)
	s := &c.shards[h%cacheShards]
	e := &cacheEntry{token: token, id: id, expires: id.ExpiresAt.UnixNano(), key: key}
	s.mu.Lock()
	if _, present := s.m[h]; !present && len(s.m) >= c.perShard {
		s.evictLocked(now.UnixNano())
	}
	s.m[h] = e
	s.mu.Unlock()
}

// evictLocked drops dead entries, or one arbitrary live entry when none is dead: the bound matters more
// than recency, and a miss only costs one signature check.
func (s *cacheShard) evictLocked(now int64) {
	evicted := false
	for h, e := range s.m {
		if now >= e.expires || e.key.removed.Load() {
			delete(s.m, h)
			evicted = true
		}
	}
	if evicted {
		return
	}
	for h := range s.m {
		delete(s.m, h)
		return
	}
}

func (c *tokenCache) len() int {
	if c == nil {
		return 0
	}
	n := 0
	for i := range c.shards {
		c.shards[i].mu.RLock()
		n += len(c.shards[i].m)
		c.shards[i].mu.RUnlock()
	}
	return n
}

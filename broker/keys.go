package broker

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
)

// keyring holds API or admin keys as SHA-256 digests: comparing fixed-length digests in constant time,
// against every key without stopping early, tells an attacker neither a key's length nor which key came close.
type keyring [][sha256.Size]byte

func newKeyring(keys []string) keyring {
	k := make(keyring, len(keys))
	for i, key := range keys {
		k[i] = sha256.Sum256([]byte(key))
	}
	return k
}

func (k keyring) empty() bool { return len(k) == 0 }

func (k keyring) match(presented string) bool { return k.find(presented) >= 0 }

// find is the index of the presented key, or -1; it compares every key whatever matches.
func (k keyring) find(presented string) int {
	d := sha256.Sum256([]byte(presented))
	found := -1
	for i := range k {
		found = subtle.ConstantTimeSelect(subtle.ConstantTimeCompare(d[:], k[i][:]), i, found)
	}
	return found
}

// bearer returns the token of an "Authorization: Bearer <token>" header.
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return "", false
	}
	return strings.TrimSpace(token), true
}

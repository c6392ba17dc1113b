package authhook

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// revocationsFileName holds the revocations, inside the data directory (0600).
const revocationsFileName = "idmq-revocations.json"

// maxRevocationKey bounds a revoked username or jti; both come from an operator's HTTP request.
const maxRevocationKey = 1024

// revokedReason is the DISCONNECT Reason String sent with 0x98 to clients whose credentials are revoked.
const revokedReason = "credentials revoked"

// Revocation refuses credentials: by Username, every credential of that user issued before RevokedAt or in
// the same second (iat has one-second precision; a credential without iat counts as issued before); by
// TokenID, the credential with that jti, whichever its issuer. Exactly one of the two is set. Revocations are
// kept for auth.revocation_retention.
type Revocation struct {
	Username  string    `json:"username,omitempty"`
	TokenID   string    `json:"jti,omitempty"`
	RevokedAt time.Time `json:"revoked_at"` // set by Revoke
}

// revocationSet is immutable: Revoke builds a new one and swaps the pointer, so the CONNECT path checks it
// with one atomic load and two map lookups, without locks or allocations.
type revocationSet struct {
	list  []Revocation
	users map[string]int64 // latest revocation per username, unix seconds
	jtis  map[string]struct{}
}

func newRevocationSet(list []Revocation) *revocationSet {
	rs := &revocationSet{list: list, users: map[string]int64{}, jtis: map[string]struct{}{}}
	for _, r := range list {
		if r.Username != "" {
			rs.users[r.Username] = max(rs.users[r.Username], r.RevokedAt.Unix())
		} else {
			rs.jtis[r.TokenID] = struct{}{}
		}
	}
	return rs
}

// revoked refuses an identity whose credential is revoked. Called after every verification, cached or not.
func (h *Hook) revoked(id *Identity) error {
	rs := h.revocations.Load()
	if rs == nil {
		return nil
	}
	if at, ok := rs.users[id.Username]; ok && id.Username != "" && (id.IssuedAt.IsZero() || id.IssuedAt.Unix() <= at) {
		return &Error{Reason: ReasonTokenRevoked, Provider: id.Provider,
			Message: fmt.Sprintf("credentials of %q issued until %s are revoked", id.Username, time.Unix(at, 0).UTC().Format(time.RFC3339))}
	}
	if id.TokenID != "" {
		if _, ok := rs.jtis[id.TokenID]; ok {
			return &Error{Reason: ReasonTokenRevoked, Provider: id.Provider, Message: fmt.Sprintf("token %q is revoked", clip(id.TokenID))}
		}
	}
	return nil
}

// Revoke refuses the credentials r names from now on, cached ones included, and disconnects the connected
// clients holding them (MQTT 5: DISCONNECT 0x98 Administrative action). The revocation takes effect even
// when it cannot be written to disk; the error then says it will not survive a restart.
//
// r.RevokedAt is set to now unless r carries an earlier time (a cluster node applying another's revocation).
// A username revocation refuses tokens whose iat is in or before the second of the revocation, so a
// credential issued in the same second as the revocation is refused too: ask for a new one a second later.
func (h *Hook) Revoke(r Revocation) (disconnected int, err error) {
	if (r.Username == "") == (r.TokenID == "") {
		return 0, errors.New("authhook: a revocation names exactly one of username and jti")
	}
	if len(r.Username) > maxRevocationKey || len(r.TokenID) > maxRevocationKey {
		return 0, fmt.Errorf("authhook: a revoked username or jti is at most %d bytes", maxRevocationKey)
	}
	h.revocationsMu.Lock()
	now := h.now()
	if r.RevokedAt.IsZero() || r.RevokedAt.After(now) {
		r.RevokedAt = now // a revocation made elsewhere (another cluster node) keeps its own time
	}
	var list []Revocation
	for _, old := range h.liveRevocations(now) {
		if old.Username != r.Username || old.TokenID != r.TokenID { // the new entry supersedes the same key
			list = append(list, old)
		}
	}
	list = append(list, r)
	rs := newRevocationSet(list)
	h.revocations.Store(rs) // before disconnecting, so that a reconnect with the same credential is refused
	err = h.saveRevocations(list)
	h.revocationsMu.Unlock()

	h.sessions.Range(func(_, v any) bool {
		s := v.(*session)
		id := s.id.Load()
		if h.revoked(id) == nil {
			return true
		}
		s.mu.Lock()
		closed := s.closed // an earlier Disconnect (another revocation) already ended it
		s.mu.Unlock()
		cl := s.client.Value()
		if closed || cl == nil || cl.Closed() {
			return true
		}
		h.notify(AuthEvent{Kind: CredentialsRevoked, Client: cl, Identity: id, Provider: id.Provider,
			Code: packets.Code{Code: packets.ErrAdministrativeAction.Code, Reason: revokedReason}})
		if h.Disconnect(cl, packets.ErrAdministrativeAction, revokedReason) == nil {
			disconnected++
			h.log.Info("authhook: credentials revoked, client disconnected", "provider", id.Provider, "username", id.Username,
				"client", cl.ID, "remote", cl.Net.Remote)
		}
		return true
	})
	return disconnected, err
}

// Revocations lists the revocations in force, oldest first.
func (h *Hook) Revocations() []Revocation {
	out := h.liveRevocations(h.now())
	if out == nil {
		out = []Revocation{}
	}
	return out
}

// liveRevocations copies the entries younger than the retention.
func (h *Hook) liveRevocations(now time.Time) []Revocation {
	rs := h.revocations.Load()
	if rs == nil {
		return nil
	}
	var out []Revocation
	for _, r := range rs.list {
		if now.Sub(r.RevokedAt) < h.ps().cfg.RevocationRetention {
			out = append(out, r)
		}
	}
	return out
}

type revocationsFile struct {
	Revocations []Revocation `json:"revocations"`
}

// loadRevocations reads the persisted revocations, dropping those older than the retention. A file that
// cannot be read or parsed stops New: starting without it would silently readmit revoked credentials.
func (h *Hook) loadRevocations() error {
	if h.revocationsAt == "" {
		return nil
	}
	data, err := os.ReadFile(h.revocationsAt)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("authhook: revocations: %w", err)
	}
	var f revocationsFile
	if err := json.Unmarshal(data, &f); err != nil {
		return fmt.Errorf("authhook: revocations file %s: %w", h.revocationsAt, err)
	}
	now := h.now()
	var list []Revocation
	for i, r := range f.Revocations {
		if (r.Username == "") == (r.TokenID == "") || r.RevokedAt.IsZero() {
			return fmt.Errorf("authhook: revocations file %s: entry %d needs exactly one of username and jti, and revoked_at", h.revocationsAt, i)
		}
		if now.Sub(r.RevokedAt) < h.ps().cfg.RevocationRetention {
			list = append(list, r)
		}
	}
	if len(list) > 0 {
		h.revocations.Store(newRevocationSet(list))
	}
	return nil
}

// saveRevocations writes the file atomically (temporary file, fsync, rename), so a crash leaves either the
// old list or the new one.
func (h *Hook) saveRevocations(list []Revocation) error {
	if h.revocationsAt == "" {
		return nil
	}
	data, err := json.MarshalIndent(revocationsFile{Revocations: list}, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(h.revocationsAt)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("authhook: saving revocations: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".revocations-*")
	if err != nil {
		return fmt.Errorf("authhook: saving revocations: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing left to remove
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("authhook: saving revocations: %w", err)
	}
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("authhook: saving revocations: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("authhook: saving revocations: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("authhook: saving revocations: %w", err)
	}
	if err := os.Rename(tmp.Name(), h.revocationsAt); err != nil {
		return fmt.Errorf("authhook: saving revocations: %w", err)
	}
	if d, err := os.Open(dir); err == nil { // make the rename itself durable
		_ = d.Sync()
		d.Close()
	}
	return nil
}

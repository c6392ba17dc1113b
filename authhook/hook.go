package authhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/golang-jwt/jwt/v5"
)

// MaxTokenSize bounds a credential; longer ones are refused before any parsing.
const MaxTokenSize = 16 << 10

// defaultFetchWait is the longest a CONNECT waits for a key set fetch caused by an unknown kid.
const defaultFetchWait = 2 * time.Second

// jwtAuthMethods are the MQTT 5 Authentication Methods that carry a JWT in Authentication Data.
var jwtAuthMethods = []string{"JWT", "OAUTH2-JWT", "CUSTOM-JWT"}

// ProviderStatus is the health of one issuer of one provider, for /readyz and `idmq check`.
type ProviderStatus struct {
	Name      string    `json:"name"`
	Type      string    `json:"type"`
	Issuer    string    `json:"issuer"`
	Ready     bool      `json:"ready"` // keys were fetched at least once (always true for local keys)
	Keys      int       `json:"keys"`
	LastError string    `json:"last_error,omitempty"`
	LastFetch time.Time `json:"last_fetch,omitzero"`
}

// Hook authenticates CONNECTs: it turns the credential into an Identity, attaches it to the client, and
// refuses everything else with a precise CONNACK. It never allows a client it has not verified.
type Hook struct {
	mqtt.HookBase
	opts    Options // as given to New: what Reload provisions new providers with
	server  *mqtt.Server
	log     *slog.Logger
	now     func() time.Time
	parser  *jwt.Parser
	metrics *authMetrics

	// set is the configuration and providers in force. A verification loads it once, so a CONNECT racing a
	// Reload is judged wholly by the old set or wholly by the new one.
	set      atomic.Pointer[providerSet]
	reloadMu sync.Mutex // serialises Reload

	sessions         sync.Map // weak.Pointer[mqtt.Client] -> *session
	onIdentityChange func(cl *mqtt.Client)
	expiry           expiryQueue  // every session's credential deadline, one timer for all
	armed            atomic.Int64 // sessions in the expiry queue

	revocations   atomic.Pointer[revocationSet] // immutable; replaced whole by Revoke
	revocationsMu sync.Mutex                    // serialises Revoke
	revocationsAt string                        // file the revocations persist to; "" = memory only

	// Background work (key refreshes, registry polls) runs under ctx and is counted in wg; cleanup
	// (provision.go) cancels and waits for it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

var _ mqtt.Hook = (*Hook)(nil)

// ID implements mqtt.Hook.
func (h *Hook) ID() string { return "idmq-auth" }

// Provides implements mqtt.Hook.
func (h *Hook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnSessionEstablished, mqtt.OnAuthPacket, mqtt.OnDisconnect:
		return true
	}
	return false
}

// LocalIssuer is the `local` provider's issuer, or nil when none is configured.
func (h *Hook) LocalIssuer() *LocalIssuer { return h.ps().local }

// ps is the provider set in force.
func (h *Hook) ps() *providerSet { return h.set.Load() }

// Identity returns the identity attached to a connected client: the one of its latest successful
// authentication (CONNECT or MQTT 5 re-authentication).
func (h *Hook) Identity(cl *mqtt.Client) (*Identity, bool) {
	s := h.session(cl)
	if s == nil {
		return nil, false
	}
	return s.id.Load(), true
}

// Verify checks a token without binding a client: for the HTTP token exchange and tests. provider "" lets
// the token's iss choose; otherwise the token must come from that provider. The returned Identity is shared
// (it may come from the cache) and must not be modified. A fetch of unknown keys waits at most 2 s. Device
// tokens are refused (unknown_device): only a CONNECT's client id names their device.
func (h *Hook) Verify(ctx context.Context, token, provider string) (*Identity, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return h.verify(token, provider, "")
}

// verify checks a token for a client (clientID "" outside CONNECT and AUTH), choosing the provider by the
// token's iss, or, for a token without iss, by the rules of the devices providers (see devices.go). t is nil
// except for Explain, which records each step and bypasses the cache.
func (h *Hook) verify(token, provider, clientID string) (*Identity, error) {
	return h.verifyTraced(h.ps(), token, provider, clientID, nil)
}

func (h *Hook) verifyTraced(ps *providerSet, token, provider, clientID string, t *trace) (*Identity, error) {
	if len(token) > MaxTokenSize {
		return nil, refuse(ReasonTokenTooLarge, "token is %d bytes, more than the %d allowed", len(token), MaxTokenSize)
	}
	if provider != "" && ps.byName[provider] == nil {
		return nil, refuse(ReasonProviderNotFound, "no provider named %q", clip(provider))
	}
	now := h.now()
	if t != nil {
		t.pass("size", "%d bytes, at most %d", len(token), MaxTokenSize)
	} else if id := ps.cache.get(token, now); id != nil {
		if provider != "" && id.Provider != provider {
			return nil, refuse(ReasonIssuerMismatch, "token issuer does not match provider %q", provider)
		}
		if err := h.revoked(id); err != nil {
			return nil, err
		}
		return id, nil
	}
	tok, _, err := h.parser.ParseUnverified(token, jwt.MapClaims{})
	if err != nil {
		if tok != nil && tok.Header != nil && errors.Is(err, jwt.ErrTokenUnverifiable) {
			alg, _ := tok.Header["alg"].(string)
			return nil, refuse(ReasonAlgNotAllowed, "algorithm %q is not supported", clip(alg))
		}
		return nil, refuseWrap(ReasonMalformed, err, "token is not a well-formed JWT")
	}
	claims := tok.Claims.(jwt.MapClaims)
	signingString := token[:strings.LastIndexByte(token, '.')]
	if t != nil {
		t.pass("format", "a JWT, alg %s, kid %q", tok.Method.Alg(), clip(headerString(tok, "kid")))
	}
	if _, hasIss := claims["iss"]; !hasIss && len(ps.devices) > 0 {
		id, err := ps.verifyDevice(tok, signingString, provider, clientID, t)
		if err != nil {
			return nil, err
		}
		return id, h.revokedTraced(id, t)
	}
	iss, _ := claims["iss"].(string)
	if iss == "" {
		return nil, missingClaim("iss")
	}
	v := ps.byIssuer[iss]
	if v == nil {
		return nil, refuse(ReasonIssuerMismatch, "token issuer does not match any provider (iss %q)", clip(iss))
	}
	if provider != "" && v.spec.name != provider {
		return nil, refuse(ReasonIssuerMismatch, "token issuer %q does not match provider %q", clip(iss), provider)
	}
	if t != nil {
		t.selected(v.spec.name, "iss %q is the issuer of provider %q (type %s)", iss, v.spec.name, v.spec.typ)
	}
	id, kh, err := v.verify(tok, signingString, t)
	if err != nil {
		return nil, err
	}
	if t == nil {
		ps.cache.put(token, id, kh, now) // revoked or not: revocation is checked after every lookup
	}
	return id, h.revokedTraced(id, t)
}

// revokedTraced is revoked, recording the outcome for Explain.
func (h *Hook) revokedTraced(id *Identity, t *trace) error {
	err := h.revoked(id)
	if err == nil && t != nil {
		if id.TokenID == "" {
			t.pass("revocation", "username %q is not revoked (the token has no jti)", id.Username)
		} else {
			t.pass("revocation", "neither username %q nor jti %q is revoked", id.Username, clip(id.TokenID))
		}
	}
	return err
}

func headerString(tok *jwt.Token, key string) string {
	s, _ := tok.Header[key].(string)
	return s
}

// verifyCredential is verify for the bytes of a CONNECT password or Authentication Data: a token found in the
// cache is neither copied nor parsed, so a reconnect with a cached token allocates nothing for it.
func (h *Hook) verifyCredential(credential []byte, clientID string) (*Identity, error) {
	return h.verifyCredentialIn(h.ps(), credential, clientID)
}

func (h *Hook) verifyCredentialIn(ps *providerSet, credential []byte, clientID string) (*Identity, error) {
	if len(credential) <= MaxTokenSize {
		if id := ps.cache.getBytes(credential, h.now()); id != nil {
			if err := h.revoked(id); err != nil {
				return nil, err
			}
			return id, nil
		}
	}
	return h.verifyTraced(ps, string(credential), "", clientID, nil)
}

// OnConnect verifies the credential. mochi lets OnConnectAuthenticate answer only 0x86, so all decisions
// are made here and a refusal sends its own CONNACK [MQTT-3.2.2-7] before returning the code.
func (h *Hook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	var id *Identity
	for {
		ps := h.ps()
		var err error
		if id, err = h.authenticate(ps, cl, pk); err != nil {
			return h.refuseConnect(cl, err) // connack.go
		}
		h.attach(cl, id)
		// A Reload that swaps the set after this check re-evaluates the session it finds attached; one that
		// swapped before it is caught here: the CONNECT is judged again, wholly by the new set.
		if h.ps() == ps {
			break
		}
	}
	cl.Properties.Username = []byte(id.Username)
	cl.Properties.Props.AuthenticationData = nil // storage hooks persist Props: never the token
	h.metrics.observe(id.Provider, "")
	if h.log.Enabled(context.Background(), slog.LevelDebug) { // else the boxed arguments cost 4 allocations a CONNECT
		h.log.Debug("authhook: client authenticated", "provider", id.Provider, "username", id.Username, "client", cl.ID, "remote", cl.Net.Remote)
	}
	return nil
}

func (h *Hook) authenticate(ps *providerSet, cl *mqtt.Client, pk packets.Packet) (*Identity, error) {
	method := ""
	credential := pk.Connect.Password
	if cl.Properties.ProtocolVersion == 5 && pk.Properties.AuthenticationMethod != "" {
		method = pk.Properties.AuthenticationMethod
		if !slices.Contains(jwtAuthMethods, method) {
			return nil, refuse(ReasonBadAuthMethod, "authentication method %q is not supported (use JWT)", clip(method))
		}
		credential = pk.Properties.AuthenticationData
	}
	if len(credential) > MaxTokenSize {
		return nil, refuse(ReasonTokenTooLarge, "token is %d bytes, more than the %d allowed", len(credential), MaxTokenSize)
	}
	var verified *Identity
	if len(credential) == 0 {
		if !ps.cfg.AllowAnonymous {
			return nil, refuse(ReasonMissingCredential, "no token in the password or Authentication Data")
		}
		verified = &Identity{Provider: ProviderAnonymous}
	} else {
		var err error
		if verified, err = h.verifyCredentialIn(ps, credential, cl.ID); err != nil {
			return nil, err
		}
		if err := ps.checkUsername(verified, pk.Connect.Username); err != nil {
			return nil, err
		}
	}
	if err := h.checkClientID(verified, cl); err != nil {
		return nil, err
	}
	id := *verified
	id.ClientID = cl.ID
	id.AuthMethod = method
	id.ConnectedAt = h.now()
	return &id, nil
}

// checkUsername holds the CONNECT username to the verified identity. The identity comes from the token; the
// CONNECT username may only repeat it or be a placeholder, so nobody believes they are bob while connected as
// alice. Exchanged credentials are stricter: the exchange told the client its username, so anything else is a
// mistake worth refusing.
func (ps *providerSet) checkUsername(verified *Identity, u []byte) error {
	if verified.Origin != "" && string(u) != verified.Username {
		return &Error{Reason: ReasonUsernameMismatch, Provider: verified.Provider,
			Message: fmt.Sprintf("an exchanged credential works only with its own username %q (CONNECT username %q)", verified.Username, clip(string(u)))}
	}
	// A device is named by its client id and its username is ignored (Cloud IoT samples send "unused").
	if len(u) > 0 && string(u) != verified.Username && !slices.Contains(ps.cfg.PlaceholderUsernames, string(u)) &&
		!ps.isDeviceProvider(verified.Provider) {
		return &Error{Reason: ReasonUsernameMismatch, Provider: verified.Provider,
			Message: fmt.Sprintf("CONNECT username %q is neither the token's username %q nor a placeholder", clip(string(u)), verified.Username)}
	}
	return nil
}

// checkClientID refuses a client id whose session (live, or persisted and restored) belongs to another user.
func (h *Hook) checkClientID(verified *Identity, cl *mqtt.Client) error {
	if h.server == nil {
		return nil
	}
	if existing, ok := h.server.Clients.Get(cl.ID); ok && existing != cl && !bytes.Equal(existing.Properties.Username, []byte(verified.Username)) {
		return &Error{Reason: ReasonClientIDTaken, Provider: verified.Provider,
			Message: fmt.Sprintf("client id %q belongs to a session of another user", clip(cl.ID))}
	}
	return nil
}

// OnConnectAuthenticate allows exactly the clients OnConnect attached an identity to.
func (h *Hook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	_, ok := h.Identity(cl)
	return ok
}

// OnSessionEstablished queues the client's expiry. It runs after the CONNACK, once no later hook can refuse
// the client, and mochi always follows it with OnDisconnect, which takes it out of the queue.
func (h *Hook) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	if s := h.session(cl); s != nil {
		s.mu.Lock()
		h.armLocked(s, s.id.Load())
		s.mu.Unlock()
	}
}

// OnDisconnect takes the client out of the expiry queue and drops its identity.
func (h *Hook) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	h.detach(cl)
}

// Providers reports each provider issuer's key state without fetching anything.
func (h *Hook) Providers() []ProviderStatus {
	ps := h.ps()
	var out []ProviderStatus
	for _, s := range ps.specs {
		if dp := ps.deviceByName[s.name]; dp != nil {
			out = append(out, dp.status())
			continue
		}
		rks := ps.remotes[s]
		if len(rks) == 0 {
			out = append(out, ProviderStatus{Name: s.name, Type: s.typ, Issuer: s.issuers[0].issuer, Ready: true, Keys: 1})
			continue
		}
		for _, rk := range rks {
			ready, keys, lastErr, lastFetch := rk.status()
			st := ProviderStatus{Name: s.name, Type: s.typ, Issuer: rk.issuer, Ready: ready, Keys: keys, LastFetch: lastFetch}
			if lastErr != nil {
				st.LastError = lastErr.Error()
			}
			out = append(out, st)
		}
	}
	return out
}

// Check fetches every remote provider's discovery document and key set now and reports the outcome; a
// successful fetch also updates the keys in use.
func (h *Hook) Check(ctx context.Context) []ProviderStatus {
	ps := h.ps()
	var out []ProviderStatus
	for _, s := range ps.specs {
		if dp := ps.deviceByName[s.name]; dp != nil {
			dp.registry.scan(false)
			out = append(out, dp.status())
			continue
		}
		rks := ps.remotes[s]
		if len(rks) == 0 {
			out = append(out, ProviderStatus{Name: s.name, Type: s.typ, Issuer: s.issuers[0].issuer, Ready: true, Keys: 1})
			continue
		}
		for _, rk := range rks {
			keys, err := rk.fetch(ctx)
			if err == nil {
				rk.apply(keys)
			}
			rk.mu.Lock()
			rk.lastErr, rk.lastFetch = err, h.now()
			if err == nil {
				rk.lastSuccess = rk.lastFetch
			}
			rk.mu.Unlock()
			h.metrics.fetched(rk.provider, err)
			ready, n, _, last := rk.status()
			st := ProviderStatus{Name: s.name, Type: s.typ, Issuer: rk.issuer, Ready: ready && err == nil, Keys: n, LastFetch: last}
			if err != nil {
				st.LastError = err.Error()
			}
			out = append(out, st)
		}
	}
	return out
}

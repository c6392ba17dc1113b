package authhook

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
)

// remoteKeys is one issuer's key set, fetched over HTTP. keyfunc/v3 does the kid -> key selection (with its
// check that a JWK's own "alg" matches the token's) over this type as its jwkset.Storage; what keyfunc's own
// HTTP storage lacks is added here:
//   - New never blocks: the first fetch runs in the background and the provider is "not ready" until it works;
//   - an unknown kid causes at most one fetch per cooldown, shared by every client presenting it (keyfunc
//     queues each caller on a rate limiter instead), and a CONNECT waits at most fetchWait for it;
//   - bodies over 1 MiB are refused, discovery's jwks_uri must be on the issuer's host;
//   - a failed refresh keeps the cached keys; a key that disappears invalidates the tokens it signed.
type remoteKeys struct {
	*jwkset.MemoryJWKSet
	provider  string
	issuer    string
	jwksURL   string // configured; "" = discover
	client    *http.Client
	now       func() time.Time
	cooldown  time.Duration
	fetchWait time.Duration
	log       *slog.Logger
	ctx       context.Context
	stop      context.CancelFunc // ends ctx: the refresh loop of a key set no provider uses any more
	interval  time.Duration      // of the refresh loop
	onFetch   func(provider string, err error)
	keyfn     jwt.Keyfunc

	mu            sync.Mutex
	discoveredURL string
	inflight      chan struct{} // closed when the running fetch ends
	lastTriggered time.Time     // last fetch caused by an unknown kid
	handles       map[string]*keyHandle
	fingerprints  map[string]string
	noKID         *keyHandle // for tokens without kid: invalidated by any removal
	ready         bool
	keyCount      int
	lastErr       error
	lastFetch     time.Time
	lastSuccess   time.Time
}

var (
	errUnknownKID      = errors.New("unknown kid")
	errKeysUnavailable = errors.New("keys unavailable")
)

func newRemoteKeys(ctx context.Context, provider string, iss issuerSpec, client *http.Client, now func() time.Time, cooldown, fetchWait time.Duration, log *slog.Logger) (*remoteKeys, error) {
	r := &remoteKeys{
		MemoryJWKSet: jwkset.NewMemoryStorage(),
		provider:     provider,
		issuer:       iss.issuer,
		jwksURL:      iss.jwksURL,
		client:       client,
		now:          now,
		cooldown:     cooldown,
		fetchWait:    fetchWait,
		log:          log,
		ctx:          ctx,
		handles:      map[string]*keyHandle{},
		fingerprints: map[string]string{},
		noKID:        &keyHandle{},
	}
	kf, err := keyfunc.New(keyfunc.Options{Ctx: ctx, Storage: r, UseWhitelist: []jwkset.USE{jwkset.UseSig, ""}})
	if err != nil {
		return nil, err
	}
	r.keyfn = kf.Keyfunc
	return r, nil
}

// KeyRead is keyfunc's way in: a miss triggers the shared, rate-limited refresh before giving up.
func (r *remoteKeys) KeyRead(ctx context.Context, kid string) (jwkset.JWK, error) {
	if jwk, err := r.MemoryJWKSet.KeyRead(ctx, kid); err == nil {
		return jwk, nil
	}
	r.refreshForUnknownKID()
	if jwk, err := r.MemoryJWKSet.KeyRead(ctx, kid); err == nil {
		return jwk, nil
	}
	if !r.isReady() {
		return jwkset.JWK{}, errKeysUnavailable
	}
	return jwkset.JWK{}, errUnknownKID
}

// lookup resolves the key for a parsed token; the handle tracks whether that key is later removed.
func (r *remoteKeys) lookup(tok *jwt.Token) (any, *keyHandle, error) {
	kid, _ := tok.Header["kid"].(string)
	if kid == "" && r.keyCount0() {
		r.refreshForUnknownKID()
	}
	key, err := r.keyfn(tok)
	switch {
	case errors.Is(err, errKeysUnavailable):
		return nil, nil, refuseWrap(ReasonKeysUnavailable, r.lastError(), "keys of issuer %q are not available", r.issuer)
	case errors.Is(err, errUnknownKID):
		return nil, nil, refuse(ReasonUnknownKID, "no key with kid %q in the key set of issuer %q", clip(kid), r.issuer)
	case err != nil:
		// keyfunc refuses a JWK whose own alg or use does not fit the token.
		return nil, nil, refuseWrap(ReasonAlgNotAllowed, err, "key %q does not allow this token's algorithm", clip(kid))
	}
	if set, ok := key.(jwt.VerificationKeySet); ok && len(set.Keys) == 0 {
		if !r.isReady() {
			return nil, nil, refuseWrap(ReasonKeysUnavailable, r.lastError(), "keys of issuer %q are not available", r.issuer)
		}
		return nil, nil, refuse(ReasonUnknownKID, "key set of issuer %q is empty", r.issuer)
	}
	r.mu.Lock()
	h := r.noKID
	if kid != "" {
		h = r.handles[kid]
	}
	r.mu.Unlock()
	if h == nil {
		h = staticHandle
	}
	return key, h, nil
}

func (r *remoteKeys) keyCount0() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.keyCount == 0
}

func (r *remoteKeys) isReady() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ready
}

func (r *remoteKeys) lastError() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastErr
}

// refreshForUnknownKID joins the running fetch, or starts one unless one was started for an unknown kid less
// than cooldown ago, and waits for it at most fetchWait.
func (r *remoteKeys) refreshForUnknownKID() {
	r.mu.Lock()
	ch := r.inflight
	if ch == nil {
		now := r.now()
		if !r.lastTriggered.IsZero() && now.Sub(r.lastTriggered) < r.cooldown {
			r.mu.Unlock()
			return
		}
		r.lastTriggered = now
		ch = r.startFetchLocked()
	}
	r.mu.Unlock()
	t := time.NewTimer(r.fetchWait)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	case <-r.ctx.Done():
	}
}

// refreshNow is a manual refresh: it fetches now, or joins the running fetch, unless a fetch was triggered
// (by an unknown kid or a manual refresh) less than cooldown ago, and waits for it. ok is false when too soon.
func (r *remoteKeys) refreshNow() (ok bool, err error) {
	r.mu.Lock()
	ch := r.inflight
	if ch == nil {
		now := r.now()
		if !r.lastTriggered.IsZero() && now.Sub(r.lastTriggered) < r.cooldown {
			r.mu.Unlock()
			return false, nil
		}
		r.lastTriggered = now
		ch = r.startFetchLocked()
	}
	r.mu.Unlock()
	select {
	case <-ch:
	case <-r.ctx.Done():
		return true, r.ctx.Err()
	}
	return true, r.lastError()
}

// refresh fetches now (joining a running fetch) and waits for it; for the background loop.
func (r *remoteKeys) refresh() error {
	r.mu.Lock()
	ch := r.inflight
	if ch == nil {
		ch = r.startFetchLocked()
	}
	r.mu.Unlock()
	select {
	case <-ch:
	case <-r.ctx.Done():
		return r.ctx.Err()
	}
	return r.lastError()
}

// startFetchLocked runs one fetch detached from any client, so a client giving up does not cancel it for
// the others waiting on the same channel.
func (r *remoteKeys) startFetchLocked() chan struct{} {
	ch := make(chan struct{})
	r.inflight = ch
	go func() {
		ctx, cancel := context.WithTimeout(r.ctx, 20*time.Second)
		keys, err := r.fetch(ctx)
		cancel()
		if err == nil {
			r.apply(keys)
		}
		r.mu.Lock()
		r.inflight = nil
		r.lastFetch = r.now()
		r.lastErr = err
		if err == nil {
			r.lastSuccess = r.lastFetch
		}
		r.mu.Unlock()
		if r.onFetch != nil && r.ctx.Err() == nil {
			r.onFetch(r.provider, err)
		}
		if err != nil && r.ctx.Err() == nil {
			r.log.Warn("authhook: key set fetch failed; cached keys stay in use", "provider", r.provider, "issuer", r.issuer, "error", err)
		}
		close(ch)
	}()
	return ch
}

// fetch gets the key set (discovering its URL first if needed) without touching the current keys.
func (r *remoteKeys) fetch(ctx context.Context) ([]jwkset.JWK, error) {
	u, err := r.keySetURL(ctx)
	if err != nil {
		return nil, err
	}
	var set jwkset.JWKSMarshal
	if err := getJSON(ctx, r.client, u, &set); err != nil {
		return nil, err
	}
	var keys []jwkset.JWK
	var skipped []string
	for _, m := range set.Keys {
		// Only public signing keys: a symmetric ("oct") key in a public key set must never verify anything.
		if m.KTY == jwkset.KtyOct || m.USE == jwkset.UseEnc {
			continue
		}
		jwk, err := jwkset.NewJWKFromMarshal(m, jwkset.JWKMarshalOptions{}, jwkset.JWKValidateOptions{})
		if err != nil {
			skipped = append(skipped, fmt.Sprintf("kid %q: %v", clip(m.KID), err))
			continue
		}
		keys = append(keys, jwk)
	}
	if len(keys) == 0 {
		fe := &fetchError{URL: u, Kind: "no_keys"}
		if len(skipped) > 0 {
			fe.Err = errors.New(strings.Join(skipped, "; "))
		}
		return nil, fe
	}
	return keys, nil
}

func (r *remoteKeys) keySetURL(ctx context.Context) (string, error) {
	if r.jwksURL != "" {
		return r.jwksURL, nil
	}
	r.mu.Lock()
	u := r.discoveredURL
	r.mu.Unlock()
	if u != "" {
		return u, nil
	}
	u, err := discoverJWKSURL(ctx, r.client, r.issuer)
	if err != nil {
		return "", err
	}
	r.mu.Lock()
	r.discoveredURL = u
	r.mu.Unlock()
	return u, nil
}

// discoverJWKSURL reads the issuer's OpenID discovery document. Its issuer must equal ours exactly (OIDC
// Discovery 1.0 §4.3) and its jwks_uri must be https on the issuer's own host: a discovery document pointing
// keys elsewhere is refused unless jwks_url is configured explicitly.
func discoverJWKSURL(ctx context.Context, client *http.Client, issuer string) (string, error) {
	wellKnown := strings.TrimSuffix(issuer, "/") + "/.well-known/openid-configuration"
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := getJSON(ctx, client, wellKnown, &doc); err != nil {
		return "", err
	}
	bad := func(format string, args ...any) error {
		return &fetchError{URL: wellKnown, Kind: "bad_discovery", Err: fmt.Errorf(format, args...)}
	}
	if doc.Issuer != issuer {
		return "", bad("issuer %q does not match the configured issuer %q", clip(doc.Issuer), issuer)
	}
	if doc.JWKSURI == "" {
		return "", bad("no jwks_uri")
	}
	if msg := checkHTTPS(doc.JWKSURI); msg != "" {
		return "", bad("jwks_uri %s", msg)
	}
	ju, _ := url.Parse(doc.JWKSURI)
	iu, err := url.Parse(issuer)
	if err != nil || !strings.EqualFold(ju.Host, iu.Host) {
		return "", bad("jwks_uri %q is not on the issuer's host %q; set jwks_url explicitly if this is intended", clip(doc.JWKSURI), iu.Host)
	}
	return doc.JWKSURI, nil
}

// apply replaces the key set and retires handles of keys that vanished or changed.
func (r *remoteKeys) apply(keys []jwkset.JWK) {
	fresh := make(map[string]string, len(keys))
	for _, k := range keys {
		fresh[k.Marshal().KID] = fingerprint(k.Marshal())
	}
	_ = r.MemoryJWKSet.KeyReplaceAll(r.ctx, keys)
	r.mu.Lock()
	defer r.mu.Unlock()
	removed := false
	for kid, fp := range r.fingerprints {
		if fresh[kid] != fp {
			if h := r.handles[kid]; h != nil {
				h.removed.Store(true)
			}
			delete(r.handles, kid)
			removed = true
		}
	}
	for kid := range fresh {
		if r.handles[kid] == nil {
			r.handles[kid] = &keyHandle{}
		}
	}
	if removed {
		r.noKID.removed.Store(true)
		r.noKID = &keyHandle{}
	}
	r.fingerprints = fresh
	r.ready = true
	r.keyCount = len(keys)
}

func fingerprint(m jwkset.JWKMarshal) string {
	return strings.Join([]string{string(m.KTY), string(m.CRV), m.N, m.E, m.X, m.Y}, "|")
}

// run keeps the key set fresh: fetch now, retry with backoff until the first success, then every interval.
func (r *remoteKeys) run(interval time.Duration) {
	backoff := time.Second
	for {
		wait := interval
		if err := r.refresh(); err != nil && !r.isReady() {
			wait = min(backoff, interval)
			backoff = min(backoff*2, time.Minute)
		}
		t := time.NewTimer(wait)
		select {
		case <-r.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (r *remoteKeys) lastSuccessAt() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastSuccess
}

func (r *remoteKeys) status() (ready bool, keys int, lastErr error, lastFetch time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ready, r.keyCount, r.lastErr, r.lastFetch
}

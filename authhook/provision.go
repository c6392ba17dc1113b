package authhook

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/golang-jwt/jwt/v5"
)

// Options configure a Hook.
type Options struct {
	Config     Config
	Server     *mqtt.Server          // sends the refusal CONNACK with a precise reason code; nil only in unit tests of Verify
	DataDir    string                // where the local provider's generated key lives (0600)
	Registerer prometheus.Registerer // optional: registers idmq_auth_total
	Logger     *slog.Logger          // optional
	HTTPClient *http.Client          // optional: fetches discovery documents and key sets
	Now        func() time.Time      // optional clock
	// BaseDir is what relative paths of devices providers (key files, registry_dir) resolve against: the
	// config file's directory. "" = the working directory.
	BaseDir string
	// OnIdentityChange is called after MQTT 5 re-authentication replaced a connected client's identity (new
	// attributes and grants), on the client's own goroutine, before the AUTH success reply is sent. The broker
	// recompiles the client's ACL here.
	OnIdentityChange func(cl *mqtt.Client)
	// OnAuthEvent, when set, is told of refusals, refreshes, expiries and revocations (authevent.go), on the
	// goroutine that decided. It must not block: it runs on a CONNECT's or an AUTH's path.
	OnAuthEvent func(AuthEvent)
}

// New builds the hook as Caddy builds a module: the config is defaulted and validated, then each provider is
// provisioned in order (its key set, registry or local issuer) and starts its own background work. When a
// step fails, New runs cleanup, the path Stop takes too, so a failed New leaves no goroutine behind.
//
// Remote key sets are fetched in the background: New never waits for an identity provider, and a provider
// whose keys never arrived is reported as not ready.
func New(opts Options) (*Hook, error) {
	cfg := opts.Config
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	h := newHook(opts)
	var err error
	if h.metrics, err = newAuthMetrics(opts.Registerer, h); err != nil {
		h.cleanup()
		return nil, err
	}
	ps, err := h.provision(cfg, nil)
	if err != nil {
		h.cleanup()
		return nil, err
	}
	h.set.Store(ps)
	if err := h.loadRevocations(); err != nil {
		h.cleanup()
		return nil, err
	}
	return h, nil
}

func newHook(opts Options) *Hook {
	h := &Hook{
		opts:             opts,
		server:           opts.Server,
		log:              opts.Logger,
		now:              opts.Now,
		parser:           jwt.NewParser(jwt.WithJSONNumber()),
		onIdentityChange: opts.OnIdentityChange,
	}
	if h.log == nil {
		h.log = slog.Default()
	}
	if h.now == nil {
		h.now = time.Now
	}
	if h.opts.HTTPClient == nil {
		h.opts.HTTPClient = defaultHTTPClient()
	}
	if opts.DataDir != "" {
		h.revocationsAt = filepath.Join(opts.DataDir, revocationsFileName)
	}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	return h
}

// provision builds the providers a validated config describes and starts their background work. A remote
// key set of old (the set in force, nil at New) whose provider, issuer and fetch settings are unchanged is
// taken over as it is, keys and refresh loop included, so a reload never leaves a provider without keys.
// When it fails it stops what it started, and nothing of old.
func (h *Hook) provision(cfg Config, old *providerSet) (*providerSet, error) {
	ps := newProviderSet(cfg)
	for i := range cfg.Providers {
		if err := h.provisionProvider(ps, i, old); err != nil {
			ps.stop(old.remoteSet()) // what it took over from old stays running
			return nil, err
		}
	}
	return ps, nil
}

// provisionProvider builds providers[i]'s key source and verifiers and starts its background work.
func (h *Hook) provisionProvider(ps *providerSet, i int, old *providerSet) error {
	pc := ps.cfg.Providers[i]
	spec, err := resolveProvider(pc)
	if err != nil {
		return err
	}
	s := &spec
	ps.specs = append(ps.specs, s)
	ps.byName[s.name] = s
	settings, _ := settingsOf(&pc) // valid: the config was validated
	switch settings := settings.(type) {
	case *devicesSettings:
		dp, err := newDeviceProvider(pc.Name, settings, s, fmt.Sprintf("providers[%d]", i), h.opts.BaseDir, ps.cfg.Leeway, h.now, h.log)
		if err != nil {
			return err
		}
		ps.devices = append(ps.devices, dp)
		ps.devicesByProject[dp.project] = dp
		ps.deviceByName[dp.name] = dp
		if dp.registry.dir != "" {
			ctx, cancel := context.WithCancel(h.ctx)
			ps.cancels = append(ps.cancels, cancel)
			h.start(func() { dp.registry.run(ctx, registryPollInterval) })
		}
	case *localSettings:
		signer, err := loadSigningKey(ps.cfg.SigningKeyFile, h.opts.DataDir)
		if err != nil {
			return err
		}
		if ps.local, err = newLocalIssuer(s, signer, h.now); err != nil {
			return err
		}
		ps.byIssuer[s.issuers[0].issuer] = newVerifier(s, s.issuers[0].issuer, localKeys{li: ps.local}, ps.cfg.Leeway, h.now)
	default:
		if s.hmacSecret != nil {
			ps.byIssuer[s.issuers[0].issuer] = newVerifier(s, s.issuers[0].issuer, staticKey{key: s.hmacSecret}, ps.cfg.Leeway, h.now)
			return nil
		}
		for _, iss := range s.issuers {
			rk, err := h.remoteKeysFor(ps, s.name, iss, old)
			if err != nil {
				return err
			}
			ps.remotes[s] = append(ps.remotes[s], rk)
			ps.byIssuer[iss.issuer] = newVerifier(s, iss.issuer, rk, ps.cfg.Leeway, h.now)
		}
	}
	return nil
}

// remoteKeysFor takes over old's key set for the same provider, issuer and fetch settings, or starts a new one.
func (h *Hook) remoteKeysFor(ps *providerSet, provider string, iss issuerSpec, old *providerSet) (*remoteKeys, error) {
	if rk := old.remoteFor(provider, iss, ps.cfg); rk != nil {
		return rk, nil
	}
	ctx, cancel := context.WithCancel(h.ctx)
	rk, err := newRemoteKeys(ctx, provider, iss, h.opts.HTTPClient, h.now, ps.cfg.UnknownKIDCooldown, defaultFetchWait, h.log)
	if err != nil {
		cancel()
		return nil, err
	}
	rk.stop = cancel
	rk.interval = ps.cfg.JWKSRefreshInterval
	rk.onFetch = h.metrics.fetched
	h.start(func() { rk.run(rk.interval) })
	return rk, nil
}

// start runs fn in the background; fn must return once h.ctx is done, since cleanup waits for it.
func (h *Hook) start(fn func()) {
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		fn()
	}()
}

// cleanup is the one way the hook's background work ends, after a failed New and in Stop: key refreshes
// and registry polls stop, and the expiry queue is emptied (the server ended those connections first).
// Running it again does nothing more.
func (h *Hook) cleanup() {
	h.cancel()
	h.wg.Wait()
	h.sessions.Range(func(_, v any) bool {
		s := v.(*session)
		s.mu.Lock()
		s.ending = true
		s.mu.Unlock()
		return true
	})
	h.expiry.close(h)
}

// Init implements mqtt.Hook; configuration comes through New, so AddHook's config must be nil.
func (h *Hook) Init(config any) error {
	if config != nil {
		return mqtt.ErrInvalidConfigType
	}
	return nil
}

// Stop implements mqtt.Hook: mochi calls it when the server closes. An embedder that never adds the hook to
// a server calls it once done with the hook.
func (h *Hook) Stop() error {
	h.cleanup()
	return nil
}

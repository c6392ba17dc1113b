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
	h := newHook(cfg, opts)
	if err := h.provision(opts); err != nil {
		h.cleanup()
		return nil, err
	}
	return h, nil
}

func newHook(cfg Config, opts Options) *Hook {
	h := &Hook{
		cfg:      cfg,
		server:   opts.Server,
		log:      opts.Logger,
		now:      opts.Now,
		parser:   jwt.NewParser(jwt.WithJSONNumber()),
		byIssuer: map[string]*verifier{},
		byName:   map[string]*providerSpec{},
		remotes:  map[*providerSpec][]*remoteKeys{},
		cache:    newTokenCache(cfg.CacheSize),

		devicesByProject: map[string]*deviceProvider{},
		deviceByName:     map[string]*deviceProvider{},

		onIdentityChange: opts.OnIdentityChange,
	}
	if h.log == nil {
		h.log = slog.Default()
	}
	if h.now == nil {
		h.now = time.Now
	}
	if opts.DataDir != "" {
		h.revocationsAt = filepath.Join(opts.DataDir, revocationsFileName)
	}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	return h
}

// provision builds what the validated config describes. It may have started background work when it fails.
func (h *Hook) provision(opts Options) error {
	var err error
	if h.metrics, err = newAuthMetrics(opts.Registerer); err != nil {
		return err
	}
	if err := h.loadRevocations(); err != nil {
		return err
	}
	client := opts.HTTPClient
	if client == nil {
		client = defaultHTTPClient()
	}
	for i := range h.cfg.Providers {
		if err := h.provisionProvider(i, opts, client); err != nil {
			return err
		}
	}
	return nil
}

// provisionProvider builds providers[i]'s key source and verifiers and starts its background work.
func (h *Hook) provisionProvider(i int, opts Options, client *http.Client) error {
	pc := h.cfg.Providers[i]
	spec, err := resolveProvider(pc)
	if err != nil {
		return err
	}
	s := &spec
	h.specs = append(h.specs, s)
	h.byName[s.name] = s
	settings, _ := settingsOf(&pc) // valid: New validated the config
	switch settings := settings.(type) {
	case *devicesSettings:
		dp, err := newDeviceProvider(pc.Name, settings, s, fmt.Sprintf("providers[%d]", i), opts.BaseDir, h.cfg.Leeway, h.now, h.log)
		if err != nil {
			return err
		}
		h.devices = append(h.devices, dp)
		h.devicesByProject[dp.project] = dp
		h.deviceByName[dp.name] = dp
		if dp.registry.dir != "" {
			h.start(func() { dp.registry.run(h.ctx, registryPollInterval) })
		}
	case *localSettings:
		signer, err := loadSigningKey(h.cfg.SigningKeyFile, opts.DataDir)
		if err != nil {
			return err
		}
		if h.local, err = newLocalIssuer(s, signer, h.now); err != nil {
			return err
		}
		h.byIssuer[s.issuers[0].issuer] = newVerifier(s, s.issuers[0].issuer, localKeys{li: h.local}, h.cfg.Leeway, h.now)
	default:
		if s.hmacSecret != nil {
			h.byIssuer[s.issuers[0].issuer] = newVerifier(s, s.issuers[0].issuer, staticKey{key: s.hmacSecret}, h.cfg.Leeway, h.now)
			return nil
		}
		for _, iss := range s.issuers {
			rk, err := newRemoteKeys(h.ctx, s.name, iss, client, h.now, h.cfg.UnknownKIDCooldown, defaultFetchWait, h.log)
			if err != nil {
				return err
			}
			h.remotes[s] = append(h.remotes[s], rk)
			h.byIssuer[iss.issuer] = newVerifier(s, iss.issuer, rk, h.cfg.Leeway, h.now)
			h.start(func() { rk.run(h.cfg.JWKSRefreshInterval) })
		}
	}
	return nil
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

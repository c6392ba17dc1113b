package broker

import (
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/idmq/idmq/authhook"
)

// liveSettings are the parts of the http section a reload replaces, read per request.
type liveSettings struct {
	cfg       *Config
	apiKeys   keyring
	adminKeys keyring
	cors      map[string]bool
	publish   *publishAccess
}

func newLiveSettings(cfg *Config) *liveSettings {
	ls := &liveSettings{cfg: cfg, apiKeys: newKeyring(cfg.HTTP.APIKeys), adminKeys: newKeyring(cfg.HTTP.AdminKeys), cors: map[string]bool{},
		publish: newPublishAccess(cfg.HTTP)}
	for _, o := range cfg.HTTP.CORSOrigins {
		ls.cors[o] = true
	}
	return ls
}

// ReloadResult is what a reload applied and what it could not.
type ReloadResult struct {
	// RestartRequired names the keys that changed but take effect only after a restart (listeners,
	// storage, data_dir, mqtt limits, the http address and certificate paths, log.format).
	RestartRequired []string `json:"restart_required"`
	// Disconnected counts the clients the new auth section no longer admits.
	Disconnected int      `json:"disconnected"`
	Warnings     []string `json:"warnings,omitempty"`
}

// ErrNoConfigFile: the broker runs on the embedded defaults, so there is no file to read again.
var ErrNoConfigFile = errors.New("the broker was started without a config file (embedded defaults): nothing to reload")

type reloadState struct {
	mu      sync.Mutex // one reload at a time
	total   *prometheus.CounterVec
	success prometheus.Gauge
}

func newReloadState(reg prometheus.Registerer) *reloadState {
	rs := &reloadState{
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "idmq_config_reloads_total", Help: "Config reloads (SIGHUP, POST /v1/reload), by result (success, failure).",
		}, []string{"result"}),
		success: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "idmq_config_last_reload_success_timestamp_seconds", Help: "When the config was last loaded successfully (start or reload), Unix seconds.",
		}),
	}
	rs.total.WithLabelValues("success")
	rs.total.WithLabelValues("failure")
	rs.success.SetToCurrentTime()
	reg.MustRegister(rs.total, rs.success)
	return rs
}

// Reload reads the config file again and applies, without dropping connections: auth (authhook.Hook.Reload),
// acl (aclhook.Hook.Reload), http.api_keys, http.admin_keys, http.cors_origins, http.rate_limit,
// mqtt.max_connect_rate, log.level, and the TLS certificates. Keys that cannot change while running are
// reported in RestartRequired and keep their old values; the rest still applies. A file that does not load
// changes nothing and returns the same error as `idmq check`.
func (b *Broker) Reload() (*ReloadResult, error) {
	b.reloads.mu.Lock()
	defer b.reloads.mu.Unlock()
	res, err := b.applyFile()
	if err != nil {
		b.reloads.total.WithLabelValues("failure").Inc()
		b.log.Error("config reload failed; nothing changed", "error", err)
		return nil, err
	}
	b.reloads.total.WithLabelValues("success").Inc()
	b.reloads.success.SetToCurrentTime()
	b.log.Info("config reloaded", "restart_required", res.RestartRequired, "disconnected", res.Disconnected)
	return res, nil
}

func (b *Broker) applyFile() (*ReloadResult, error) {
	if b.cfg.File() == "" {
		return nil, ErrNoConfigFile
	}
	next, err := LoadFile(b.cfg.File())
	if err != nil {
		return nil, err
	}
	// Against the config the broker started with: a key that needs a restart keeps being reported until one.
	res := &ReloadResult{RestartRequired: restartRequired(b.cfg, next), Warnings: next.Warnings()}
	for _, w := range next.Warnings() {
		b.log.Warn("config: " + w)
	}
	// The ACL is valid (LoadFile validated it) and swapping it cannot fail; auth can (a key file that
	// became unreadable), so it goes first and a failure leaves both as they were.
	if res.Disconnected, err = b.auth.Reload(next.Auth); err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	if err := b.acl.Reload(next.ACL); err != nil {
		return nil, fmt.Errorf("acl: %w", err)
	}
	b.live.Store(newLiveSettings(next))
	b.exchange.limit.setRate(next.HTTP.RateLimit.PerSecond, next.HTTP.RateLimit.Burst)
	b.publish.limit.setRate(next.HTTP.PublishRateLimit.PerSecond, next.HTTP.PublishRateLimit.Burst)
	b.connRate.limit.setRate(next.MQTT.MaxConnectRate.PerSecond, next.MQTT.MaxConnectRate.Burst)
	setLogLevel(b.log, next.Log.Level)
	if err := b.ReloadCertificates(); err != nil {
		b.log.Error("certificate reload failed; still serving the previous certificates", "error", err)
	} else if len(b.reload) > 0 || (b.http != nil && b.http.certs != nil) {
		b.log.Info("certificates reloaded")
	}
	return res, nil
}

// restartRequired names the keys whose change needs a restart.
func restartRequired(cur, next *Config) []string {
	out := []string{}
	check := func(key string, a, b any) {
		if !reflect.DeepEqual(a, b) {
			out = append(out, key)
		}
	}
	check("data_dir", cur.Resolve(cur.DataDir), next.Resolve(next.DataDir))
	check("log.format", cur.Log.Format, next.Log.Format)
	check("listeners", cur.Listeners, next.Listeners)
	check("http.address", cur.HTTP.Address, next.HTTP.Address)
	check("http.cert_file", cur.HTTP.CertFile, next.HTTP.CertFile)
	check("http.key_file", cur.HTTP.KeyFile, next.HTTP.KeyFile)
	check("storage", cur.Storage, next.Storage)
	check("events", cur.Events, next.Events)
	curMQTT, nextMQTT := cur.MQTT, next.MQTT
	curMQTT.MaxConnectRate, nextMQTT.MaxConnectRate = RateLimitConfig{}, RateLimitConfig{} // applied live
	check("mqtt", curMQTT, nextMQTT)
	return out
}

// reload is POST /v1/reload: 200 with the result, or 422 with the config error, the same text as `idmq check`.
func (a *adminAPI) reload(w http.ResponseWriter, r *http.Request) {
	res, err := a.b.Reload()
	if err != nil {
		writeError(w, http.StatusUnprocessableEntity, "reload_failed", err.Error())
		return
	}
	a.b.log.Info("admin API: config reloaded", "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, res)
}

// refreshProvider is POST /v1/providers/{name}/refresh: the provider's keys fetched now (rate-limited by
// auth.unknown_kid_cooldown).
func (a *adminAPI) refreshProvider(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	err := a.b.auth.RefreshProvider(name)
	switch {
	case authhook.ReasonOf(err) == authhook.ReasonProviderNotFound:
		writeError(w, http.StatusNotFound, "provider_not_found", "no provider has that name")
		return
	case errors.Is(err, authhook.ErrRefreshTooSoon):
		w.Header().Set("Retry-After", strconv.Itoa(int(a.b.live.Load().cfg.Auth.UnknownKIDCooldown.Seconds())))
		writeError(w, http.StatusTooManyRequests, "rate_limited", "the provider's keys were fetched less than auth.unknown_kid_cooldown ago")
		return
	case err != nil:
		writeError(w, http.StatusBadGateway, "fetch_failed", strings.TrimPrefix(err.Error(), "authhook: "))
		return
	}
	var out []authhook.ProviderStatus
	for _, p := range a.b.auth.Providers() {
		if p.Name == name {
			out = append(out, p)
		}
	}
	a.b.log.Info("admin API: provider keys refreshed", "provider", name, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, map[string]any{"providers": out})
}

package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/idmq/idmq/aclhook"
	"github.com/idmq/idmq/authhook"
)

// Broker is one idmq process: the mochi server with idmq's hooks, its listeners and the HTTP API.
type Broker struct {
	cfg      *Config
	log      *slog.Logger
	server   *mqtt.Server
	auth     *authhook.Hook
	acl      *aclhook.Hook
	registry *prometheus.Registry
	http     *httpServer
	exchange *exchangeHandler
	reload   []*certReloader
	opened   []listeners.Listener
	ready    atomic.Bool
	storeOK  atomic.Bool
	stopFDs  func()    // ends the file descriptor watch (fdlimit.go)
	baseline mqtt.Hook // WithBaselineAuthForBenchmarks: answers the ACL instead of b.acl

	// The write-ahead log (wal.go), with a persistent store only; walPending is replayed by Start.
	wal        *walLog
	walPending []*walEntry
	storeHook  mqtt.Hook     // the store itself, which replay persists through
	accept     chan struct{} // closed once replay is done: listeners accept from then on
}

// Option changes how New assembles the broker, for embedding and measurement; the YAML file has no way
// to reach them.
type Option func(*options)

type options struct {
	baselineAuth mqtt.Hook
}

// WithAllowAllForBenchmarks replaces authentication and the ACL with mochi's allow-all hook, so a
// benchmark can measure what idmq's auth and ACL cost on otherwise identical code. Never for serving.
func WithAllowAllForBenchmarks() Option { return WithBaselineAuthForBenchmarks(new(auth.AllowHook)) }

// WithBaselineAuthForBenchmarks replaces authentication and the ACL with hook, a benchmark's baseline
// (e.g. allow-all plus one bare signature check per CONNECT). Never for serving.
func WithBaselineAuthForBenchmarks(hook mqtt.Hook) Option {
	return func(o *options) { o.baselineAuth = hook }
}

// New assembles a broker from a validated config. Nothing is bound until Start.
func New(cfg *Config, log *slog.Logger, opts ...Option) (*Broker, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	b := &Broker{cfg: cfg, log: log, registry: prometheus.NewRegistry(), baseline: o.baselineAuth, accept: make(chan struct{})}
	for _, w := range cfg.Warnings() {
		log.Warn("config: " + w)
	}

	if err := os.MkdirAll(cfg.Resolve(cfg.DataDir), 0o700); err != nil {
		return nil, fmt.Errorf("data_dir: %w", err)
	}

	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumClients = cfg.MQTT.MaxClients
	if caps.MaximumClients == 0 {
		caps.MaximumClients = math.MaxInt64
	}
	caps.MaximumPacketSize = cfg.MQTT.MaxPacketSize
	caps.MaximumSessionExpiryInterval = uint32(cfg.MQTT.MaxSessionExpiry / time.Second)
	caps.MaximumInflight = uint16(cfg.MQTT.MaxInflight)
	caps.ReceiveMaximum = uint16(cfg.MQTT.MaxInflight)
	caps.MaximumClientWritesPending = int32(cfg.MQTT.OutboundQueue)
	b.server = mqtt.New(&mqtt.Options{
		Capabilities:             caps,
		ClientNetReadBufferSize:  cfg.MQTT.ReadBufferSize,
		ClientNetWriteBufferSize: cfg.MQTT.WriteBufferSize,
		Logger:                   log,
		// $SYS topics are published every 30s rather than mochi's 1s: they cost a fan-out each time.
		SysTopicResendInterval: 30,
	})

	var err error
	b.auth, err = authhook.New(authhook.Options{
		Config:     cfg.Auth,
		Server:     b.server,
		DataDir:    cfg.Resolve(cfg.DataDir),
		BaseDir:    cfg.Resolve("."), // registry_dir and key files are relative to the config file
		Registerer: b.registry,
		Logger:     log,
		// After an MQTT 5 re-authentication the client's rules follow its new token. b.acl is read when
		// called: the ACL hook is built after this one.
		OnIdentityChange: func(cl *mqtt.Client) { b.acl.Refresh(cl) },
	})
	if err != nil {
		return nil, err
	}
	b.acl, err = aclhook.New(aclhook.Options{
		Config:     cfg.ACL,
		Subject:    b.aclSubject,
		Server:     b.server,
		Registerer: b.registry,
		Logger:     log,
	})
	if err != nil {
		return nil, err
	}
	// Order matters: the rate limit refuses before any signature work; auth attaches the identity that
	// the ACL hook's OnConnect (Will check) reads.
	if err := b.server.AddHook(newConnectLimitHook(b.server, cfg.MQTT.MaxConnectRate, b.registry), nil); err != nil {
		return nil, err
	}
	if o.baselineAuth != nil {
		log.Warn("authentication and ACL are OFF: every client may connect and use every topic (benchmark mode)", "hook", o.baselineAuth.ID())
		if err := b.server.AddHook(o.baselineAuth, nil); err != nil {
			return nil, err
		}
	} else {
		if err := b.server.AddHook(b.auth, nil); err != nil {
			return nil, err
		}
		if err := b.server.AddHook(b.acl, nil); err != nil {
			return nil, err
		}
	}
	if err := b.server.AddHook(new(sendQuotaOffHook), nil); err != nil {
		return nil, err
	}
	if err := b.openWAL(); err != nil {
		return nil, err
	}
	if err := b.addStorage(); err != nil {
		b.closeWAL()
		return nil, err
	}
	if err := b.server.AddHook(newMetricsHook(b.registry, b.server), nil); err != nil {
		return nil, err
	}
	if cfg.MQTT.SlowSubscriberWait > 0 {
		// Before the WAL: a publish it logs has finished waiting.
		hook := newBackpressureHook(b.server, cfg.MQTT.MaxInflight, cfg.MQTT.SlowSubscriberWait, log, b.registry)
		if err := b.server.AddHook(hook, nil); err != nil {
			return nil, err
		}
	}
	if b.wal != nil {
		// Last: no hook after it may reject or change a publish it has logged.
		if err := b.server.AddHook(&walHook{wal: b.wal}, nil); err != nil {
			return nil, err
		}
	}
	b.exchange = b.newExchangeHandler()
	return b, nil
}

func (b *Broker) aclSubject(cl *mqtt.Client) (aclhook.Subject, bool) {
	id, ok := b.auth.Identity(cl)
	if !ok {
		if cl.Net.Conn == nil && len(cl.Properties.Username) > 0 {
			// A persistent session restored from the store after a restart: its owner is offline and only
			// the verified username was persisted. Rules on %u and %c keep queueing its messages; rules
			// that need attributes or grants do not apply until the owner reconnects with a token.
			return aclhook.Subject{Username: string(cl.Properties.Username), ClientID: cl.ID}, true
		}
		return aclhook.Subject{}, false
	}
	return aclhook.Subject{
		Username:   id.Username,
		ClientID:   cl.ID,
		Attributes: id.Attributes,
		Grants: aclhook.Grants{
			Publish:   id.Grants.Publish,
			Subscribe: id.Grants.Subscribe,
			All:       id.Grants.All,
		},
	}, true
}

// Server exposes the mochi server, for embedding and tests.
func (b *Broker) Server() *mqtt.Server { return b.server }

// Auth exposes the auth hook (token minting, identities).
func (b *Broker) Auth() *authhook.Hook { return b.auth }

// Start binds every listener and the HTTP server, then serves. If any address cannot be bound, nothing is left open.
func (b *Broker) Start() error {
	if err := b.openListeners(); err != nil {
		b.closeOpened()
		return err
	}
	hs, err := b.newHTTPServer()
	if err != nil {
		b.closeOpened()
		return err
	}
	b.http = hs
	// Serve restores the store and starts the listeners, which wait for b.accept.
	if err := b.server.Serve(); err != nil {
		b.closeOpened()
		hs.close(context.Background())
		return fmt.Errorf("starting mqtt server: %w", err)
	}
	if err := b.replayWAL(); err != nil {
		_ = b.server.Close()
		close(b.accept)
		hs.close(context.Background())
		return err
	}
	close(b.accept)
	for _, l := range b.opened {
		b.log.Info("listening", "listener", l.ID(), "protocol", l.Protocol(), "address", l.Address())
	}
	if hs != nil {
		hs.serve()
		b.log.Info("listening", "listener", "http", "protocol", hs.protocol(), "address", hs.address())
	}
	b.stopFDs = newFDWatch(b.log).start(fdCheckInterval)
	b.ready.Store(true)
	return nil
}

func (b *Broker) openListeners() error {
	for i, lc := range b.cfg.Listeners {
		id := fmt.Sprintf("%s%d", lc.Type, i)
		var r *certReloader
		if lc.Type == ListenerTLS || lc.Type == ListenerWSS {
			var err error
			if r, err = newCertReloader(b.cfg.Resolve(lc.CertFile), b.cfg.Resolve(lc.KeyFile)); err != nil {
				return fmt.Errorf("listeners[%d]: %w", i, err)
			}
			b.reload = append(b.reload, r)
		}
		l, err := openListener(id, lc, tlsConfigOf(r), b.cfg.MQTT.MaxPacketSize, b.cfg.MQTT.ConnectTimeout, b.stopListenerClients)
		if err != nil {
			return fmt.Errorf("listeners[%d] (%s %s): %w", i, lc.Type, lc.Address, err)
		}
		b.opened = append(b.opened, l)
		if err := b.server.AddListener(gatedListener{Listener: l, open: b.accept}); err != nil {
			return fmt.Errorf("listeners[%d]: %w", i, err)
		}
	}
	return nil
}

func tlsConfigOf(r *certReloader) *tls.Config {
	if r == nil {
		return nil
	}
	return r.tlsConfig()
}

// stopListenerClients ends the connections of one listener at shutdown. Clients.GetAll copies the map
// under a single read lock, unlike mochi's GetByListener (see connectDeadline.Close).
func (b *Broker) stopListenerClients(id string) {
	for _, cl := range b.server.Clients.GetAll() {
		if cl.Net.Listener == id && !cl.Closed() {
			cl.Stop(packets.ErrServerShuttingDown)
		}
	}
}

// closeOpened releases sockets bound by a Start that failed half-way.
func (b *Broker) closeOpened() {
	for _, l := range b.opened {
		l.Close(func(string) {})
	}
}

// Addresses returns the bound address of each MQTT listener by id (useful with port 0).
func (b *Broker) Addresses() map[string]string {
	out := map[string]string{}
	for _, l := range b.opened {
		out[l.ID()] = l.Address()
	}
	if b.http != nil {
		out["http"] = b.http.address()
	}
	return out
}

// ReloadCertificates re-reads every TLS certificate from disk (SIGHUP). A pair that fails to load keeps
// serving the previous certificate.
func (b *Broker) ReloadCertificates() error {
	var errs []error
	for _, r := range b.reload {
		if err := r.reload(); err != nil {
			errs = append(errs, err)
		}
	}
	if b.http != nil && b.http.certs != nil {
		if err := b.http.certs.reload(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Close stops accepting, disconnects clients and closes the store, so sessions, retained and inflight
// messages are on disk when it returns.
func (b *Broker) Close(ctx context.Context) error {
	b.ready.Store(false)
	if b.stopFDs != nil {
		b.stopFDs()
	}
	var errs []error
	if b.http != nil {
		b.http.close(ctx)
	}
	if err := b.server.Close(); err != nil {
		errs = append(errs, err)
	}
	_ = b.auth.Stop() // mochi stopped the hook in server.Close when it was added; Stop is idempotent
	return errors.Join(errs...)
}

package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/idmq/idmq/aclhook"
	"github.com/idmq/idmq/authhook"
	"github.com/idmq/idmq/events"
	"github.com/idmq/idmq/internal/benchmode"
	"github.com/idmq/idmq/mochifix"
)

// Broker is one idmq process: the mochi server with idmq's hooks, its listeners and the HTTP API.
type Broker struct {
	cfg      *Config
	log      *slog.Logger
	server   *mqtt.Server
	auth     *authhook.Hook
	acl      *aclhook.Hook
	fixes    *mochifix.Fixes // mochi v2.7.9 workarounds, the store and the write-ahead log
	registry *prometheus.Registry
	http     *httpServer
	exchange *exchangeHandler
	publish  *publishAPI // POST /v1/publish
	reload   []*certReloader
	opened   []listeners.Listener
	live     atomic.Pointer[liveSettings] // what a reload replaces (reload.go)
	reloads  *reloadState
	connRate *connectLimitHook
	ready    atomic.Bool
	storeOK  atomic.Bool
	stopFDs  func()       // ends the file descriptor watch (fdlimit.go)
	cluster  *clusterNode // nil: one node
	joined   atomic.Bool  // clustered: New joined, b.cluster is set

	// closeServer closes server once: mochi's Close panics the second time, and a failed Start closes it
	// before its caller's Close.
	closeServer func() error

	events     *events.Dispatcher // nil: no webhooks (events.go)
	eventsHook *events.Hook
}

// New assembles a broker from a validated config. Nothing is bound until Start. A New that fails leaves
// nothing running or locked (key refreshes, the ACL sweeper, the store, the write-ahead log).
// The options are for benchmarks in this module only (internal/benchmode).
func New(cfg *Config, log *slog.Logger, opts ...benchmode.Option) (_ *Broker, err error) {
	bench := benchmode.Apply(opts)
	b := &Broker{cfg: cfg, log: log, registry: prometheus.NewRegistry()}
	b.live.Store(newLiveSettings(cfg))
	b.reloads = newReloadState(b.registry)
	for _, w := range cfg.Warnings() {
		log.Warn("config: " + w)
	}
	if err := os.MkdirAll(cfg.Resolve(cfg.DataDir), 0o700); err != nil {
		return nil, fmt.Errorf("data_dir: %w", err)
	}
	b.server = mqtt.New(&mqtt.Options{
		Capabilities:             capabilities(cfg.MQTT),
		ClientNetReadBufferSize:  cfg.MQTT.ReadBufferSize,
		ClientNetWriteBufferSize: cfg.MQTT.WriteBufferSize,
		Logger:                   mochifix.Logger(log), // mochi logs whole packets, payloads included
		// $SYS topics are published every 30s rather than mochi's 1s: they cost a fan-out each time.
		SysTopicResendInterval: 30,
	})
	b.closeServer = sync.OnceValue(b.server.Close)
	defer func() {
		if err != nil {
			b.release()
		}
	}()
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
		OnAuthEvent:      b.onAuthEvent,
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
	// The rate limit refuses before any signature work; auth attaches the identity that the ACL hook's
	// OnConnect (Will check) reads. mochifix.Add adds these first, in this order, then its fixes.
	b.connRate = newConnectLimitHook(b.server, cfg.MQTT.MaxConnectRate, b.registry)
	b.publish = b.newPublishAPI() // its hook refuses MQTT clients using the HTTP publisher's client id
	hooks := []mqtt.Hook{b.connRate, b.publish.pub, b.auth, b.acl}
	if bench.BaselineAuth != nil {
		log.Warn("authentication and ACL are OFF: every client may connect and use every topic (benchmark mode)", "hook", bench.BaselineAuth.ID())
		hooks = []mqtt.Hook{hooks[0], hooks[1], bench.BaselineAuth}
	}
	if cfg.clustered() {
		// Joining waits for a quorum of nodes: /healthz and /readyz (503) answer meanwhile.
		if b.http, err = b.newHTTPServer(b.joiningRoutes()); err != nil {
			return nil, err
		}
		b.http.serve()
		if err := b.joinCluster(hooks); err != nil {
			return nil, err
		}
		b.joined.Store(true)
		hooks = b.cluster.hooks(hooks)
	}
	if err := b.addFixes(hooks); err != nil {
		return nil, err
	}
	// After the store: a second idmq on this data_dir is refused by the store's lock, with its message.
	if err := b.newEvents(); err != nil {
		return nil, err
	}
	if err := b.server.AddHook(newMetricsHook(b.registry, b.server), nil); err != nil {
		return nil, err
	}
	if b.eventsHook != nil {
		if err := b.server.AddHook(b.eventsHook, nil); err != nil {
			return nil, err
		}
	}
	b.exchange = b.newExchangeHandler()
	return b, nil
}

func capabilities(c MQTTConfig) *mqtt.Capabilities {
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumClients = c.MaxClients
	if caps.MaximumClients == 0 {
		caps.MaximumClients = math.MaxInt64
	}
	caps.MaximumPacketSize = c.MaxPacketSize
	caps.MaximumSessionExpiryInterval = uint32(c.MaxSessionExpiry / time.Second)
	caps.MaximumInflight = uint16(c.MaxInflight)
	caps.ReceiveMaximum = uint16(c.MaxInflight)
	caps.MaximumClientWritesPending = int32(c.OutboundQueue)
	return caps
}

// release is New's one cleanup path: it stops whatever New had started when it failed. Each step is
// safe on a part New never reached or that was already stopped.
func (b *Broker) release() {
	b.http.close(context.Background())
	if b.cluster != nil {
		_ = b.cluster.close()
	}
	if b.fixes != nil {
		_ = b.fixes.Close() // the store and the write-ahead log's file lock
	}
	if b.events != nil {
		_ = b.events.Close() // the webhooks' workers and store
	}
	if b.acl != nil {
		_ = b.acl.Stop() // the sweeper, started when the hook was added
	}
	if b.auth != nil {
		_ = b.auth.Stop() // key and registry refreshes
	}
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
	return subjectOf(id, cl.ID), true
}

// Server exposes the mochi server, for embedding and tests.
func (b *Broker) Server() *mqtt.Server { return b.server }

// Auth exposes the auth hook (token minting, identities).
func (b *Broker) Auth() *authhook.Hook { return b.auth }

// Start binds every listener and the HTTP server, then serves. If any address cannot be bound, nothing is left open.
func (b *Broker) Start() error {
	if err := b.openListeners(); err != nil {
		b.closeOpened()
		b.http.close(context.Background()) // a cluster node's, bound in New
		return err
	}
	hs := b.http
	if hs == nil {
		var err error
		if hs, err = b.newHTTPServer(b.routes()); err != nil {
			b.closeOpened()
			return err
		}
		b.http = hs
	}
	// Serve restores the store and starts the listeners, which wait for b.accept.
	if err := b.server.Serve(); err != nil {
		b.closeOpened()
		hs.close(context.Background())
		return fmt.Errorf("starting mqtt server: %w", err)
	}
	if b.cluster != nil {
		// Retained messages loaded and other nodes' messages flowing before the first client is let in.
		err := b.cluster.route.Start(context.Background())
		if err == nil {
			err = b.followRevocations()
		}
		if err == nil {
			err = b.serveAdminRequests()
		}
		if err != nil {
			_ = b.closeServer()
			_ = b.fixes.Close()
			hs.close(context.Background())
			return err
		}
	}
	// Replays the write-ahead log into the restored sessions, then lets the listeners accept.
	if err := b.fixes.Start(); err != nil {
		_ = b.closeServer()
		_ = b.fixes.Close()
		hs.close(context.Background())
		return err
	}
	for _, l := range b.opened {
		b.log.Info("listening", "listener", l.ID(), "protocol", l.Protocol(), "address", l.Address())
	}
	if hs != nil {
		hs.setHandler(b.routes())
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
		l, err := b.openListener(id, lc, tlsConfigOf(r))
		if err != nil {
			return fmt.Errorf("listeners[%d] (%s %s): %w", i, lc.Type, lc.Address, err)
		}
		b.opened = append(b.opened, l)
		if err := b.server.AddListener(l); err != nil {
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
	if err := b.closeServer(); err != nil {
		errs = append(errs, err)
	}
	_ = b.auth.Stop() // mochi stopped the hook in server.Close when it was added; Stop is idempotent
	if b.events != nil {
		// After server.Close, so the disconnections it caused are queued (and persisted) too.
		if err := b.events.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := b.fixes.Close(); err != nil {
		errs = append(errs, err)
	}
	if b.cluster != nil {
		if err := b.cluster.close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

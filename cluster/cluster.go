package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Options tune a node. The zero value gives the defaults below; tests shorten them.
type Options struct {
	Logger *slog.Logger // nil: silent

	// OpTimeout bounds every single JetStream call (publish ack, KV put, stream info). Default 5s.
	OpTimeout time.Duration
	// StartTimeout bounds Start: the embedded server coming up and the JetStream meta leader being known.
	// A node started before a quorum of its peers waits this long for them. Default 60s.
	StartTimeout time.Duration
	// Heartbeat is how often the node renews its presence key and checks that JetStream answers. Default 1s.
	Heartbeat time.Duration
	// MaxPendingAcks bounds asynchronous publishes awaiting their ack; PublishAsync waits when it is reached.
	// Default 4096.
	MaxPendingAcks int
	// OnReadyChange, if set, is called when Ready flips after Start returned a ready node (from the heartbeat
	// goroutine or a NATS callback; it must not block). The broker disconnects its clients after a grace when the node stays not ready.
	OnReadyChange func(ready bool)
	// Now is the clock for message timestamps and presence. Default time.Now.
	Now func() time.Time
}

func (o *Options) setDefaults() {
	if o.OpTimeout <= 0 {
		o.OpTimeout = 5 * time.Second
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = 60 * time.Second
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = time.Second
	}
	o.Heartbeat = min(o.Heartbeat, PresenceTTL/3) // a live node's key must never expire between two beats
	if o.MaxPendingAcks <= 0 {
		o.MaxPendingAcks = 4096
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Cluster is this node's membership in the cluster: its NATS connection (and embedded server), the provisioned
// stream and buckets, and its presence.
type Cluster struct {
	cfg  Config
	opts Options
	log  *slog.Logger

	srv *server.Server // nil with an external NATS
	nc  *nats.Conn
	js  jetstream.JetStream
	pub *publisher // PublishAsync's batching
	b   buckets

	health    health
	view      view
	startedAt time.Time       // guarded by health.mu
	stop      context.Context // cancelled by Close: ends the heartbeat and a put in flight
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	running   atomic.Bool // Start succeeded: readiness callbacks may look at the connection
}

// Start brings this node into the cluster: it starts the embedded nats-server (or connects to nats.url), waits
// for JetStream to answer (its meta leader elected), provisions the stream and buckets, and starts the presence
// heartbeat. cfg must have passed SetDefaults; Start validates it again. On error nothing is left running.
func Start(ctx context.Context, cfg Config, opts Options) (*Cluster, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	opts.setDefaults()
	c := &Cluster{cfg: cfg, opts: opts, log: opts.Logger}
	c.pub = newPublisher(c)
	c.stop, c.cancel = context.WithCancel(context.Background())
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.health.init(opts.Now)
	ctx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()
	if err := c.start(ctx); err != nil {
		c.cancel()
		c.shutdown()
		return nil, err
	}
	c.health.wasReady = true // Start returns a ready node: OnReadyChange reports changes from here
	c.running.Store(true)
	c.wg.Add(1)
	go c.heartbeatLoop()
	return c, nil
}

func (c *Cluster) start(ctx context.Context) error {
	var token string
	if !c.cfg.External() {
		srv, tok, err := startEmbedded(&c.cfg, c.opts)
		if err != nil {
			return err
		}
		c.srv, token = srv, tok
	}
	nc, err := connect(ctx, &c.cfg, c.srv, token, c.connChanged)
	if err != nil {
		return err
	}
	c.nc = nc
	c.health.up.Store(nc.IsConnected())
	c.js, err = jetstream.New(nc,
		jetstream.WithDefaultTimeout(c.opts.OpTimeout),
		jetstream.WithPublishAsyncTimeout(c.opts.OpTimeout),
		jetstream.WithPublishAsyncMaxPending(c.opts.MaxPendingAcks),
	)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	if err := c.waitForJetStream(ctx); err != nil {
		return err
	}
	if c.cfg.Replicas == 0 { // external, automatic: see Config.SetDefaults
		c.cfg.Replicas = 1
		if nc.ConnectedClusterName() != "" {
			c.cfg.Replicas = defaultMaxReplicas
		}
	}
	if c.b, err = c.provision(ctx); err != nil {
		return err
	}
	if err := c.beat(ctx); err != nil {
		return fmt.Errorf("cluster: announcing node %q: %w", c.cfg.Node, err)
	}
	return c.startView()
}

// waitForJetStream polls until the JetStream API answers, which in a clustered server means a meta leader is
// elected: a node started before a quorum of its peers waits here, up to StartTimeout.
func (c *Cluster) waitForJetStream(ctx context.Context) error {
	var last error
	for {
		// Short tries: a request sent before the routes are up is lost, not refused.
		callCtx, cancel := context.WithTimeout(ctx, min(c.opts.OpTimeout, 500*time.Millisecond))
		_, err := c.js.AccountInfo(callCtx)
		cancel()
		if err == nil {
			return nil
		}
		last = err
		c.log.Debug("cluster: waiting for JetStream", "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: JetStream did not answer within %s (are a quorum of nodes up?): %w",
				c.opts.StartTimeout, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Node is this node's name.
func (c *Cluster) Node() string { return c.cfg.Node }

// Replicas is the replication in use (resolved at Start when automatic).
func (c *Cluster) Replicas() int { return c.cfg.Replicas }

// MaxPayload is the largest MQTT payload (plus topic and properties) a routed message may carry: the NATS
// server's max_payload less room for the envelope. The broker caps MQTT packets below it.
func (c *Cluster) MaxPayload() int64 { return c.nc.MaxPayload() - 1024 }

// Close leaves the cluster: it stops the heartbeat, removes this node's presence key (so other nodes see it
// gone at once rather than after the key's TTL), flushes pending publishes, closes the connection and shuts the
// embedded server down. It is safe to call more than once.
func (c *Cluster) Close() error {
	var err error
	c.closeOnce.Do(func() {
		c.cancel()
		c.wg.Wait()
		if c.b.nodes != nil && c.nc.Status() == nats.CONNECTED {
			// Best effort, briefly: without it the key expires after PresenceTTL anyway.
			ctx, cancel := context.WithTimeout(context.Background(), min(c.opts.OpTimeout, time.Second))
			if derr := c.b.nodes.Delete(ctx, c.cfg.Node); derr != nil {
				c.log.Debug("cluster: removing presence key", "err", derr)
			}
			cancel()
		}
		ctx, cancel := context.WithTimeout(context.Background(), c.opts.OpTimeout)
		defer cancel()
		if c.js != nil {
			select {
			case <-c.pub.flushed():
			case <-ctx.Done():
				err = fmt.Errorf("cluster: %d publishes still unacknowledged at close", c.pub.waiting())
			}
		}
		c.shutdown()
	})
	return err
}

func (c *Cluster) shutdown() {
	if c.nc != nil {
		c.nc.Close()
	}
	if c.srv != nil {
		c.srv.Shutdown()
		c.srv.WaitForShutdown()
	}
}

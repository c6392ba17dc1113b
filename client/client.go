// Package client keeps an MQTT 5 device or service connected to idmq for as long as it runs: it connects
// with a token from any TokenSource (DeviceToken mints one from a device key), replaces the token in place
// with an AUTH packet before it expires, so the connection, its subscriptions and in-flight messages stay,
// and reconnects with jittered exponential backoff when the connection is lost.
//
// It is built on paho.golang's autopaho; Client adds the token lifecycle and typed errors (ErrAuth,
// ErrTokenExpired, *ReasonError, *TokenError) that tell a wrong key from a broker that is down.
package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
)

// authMethod is the MQTT 5 Authentication Method idmq re-authenticates in place.
const authMethod = "JWT"

// Client is one connection kept up across token lifetimes and broker restarts. Its methods are safe for
// concurrent use.
type Client struct {
	cfg     Config
	cm      *autopaho.ConnectionManager
	ctx     context.Context // ends with Disconnect
	stop    context.CancelFunc
	backoff backoff
	log     *slog.Logger
	// now and after are the clock of refresh scheduling; tests replace them.
	now   func() time.Time
	after func(time.Duration) <-chan time.Time

	tokenMu sync.Mutex      // the token source is never called concurrently
	fatal   chan error      // a refusal of the first connection: Connect gives up at once
	mu      sync.Mutex      // guards what follows
	up      bool            // connected at least once: later attempts are reconnects
	pending issued          // the token of the CONNECT in flight
	current *connState      // the connection up (or last up)
	subs    map[string]byte // topic filter -> QoS, re-subscribed when a reconnect finds no session
	lastErr error           // the latest failed attempt, for Connect's error
}

// issued is a token's life as the client knows it.
type issued struct{ obtained, exp time.Time }

// connState belongs to one network connection.
type connState struct {
	cancel context.CancelFunc // stops its refresh loop
	reauth atomic.Bool        // an AUTH is awaiting the broker's answer
	once   sync.Once          // its loss is reported once
}

// Connect validates cfg, connects and returns once the broker has accepted the client. Until then it retries
// a broker that cannot be reached, with backoff, until ctx ends; a refused credential (errors.Is(err,
// ErrAuth)) or a failing token source (*TokenError) returns at once, because retrying would not change them.
// After Connect returns, the client stays connected until Disconnect, whatever happens to the network.
func Connect(ctx context.Context, cfg Config) (*Client, error) {
	return connect(ctx, cfg, nil)
}

// connect is Connect with a hook that may replace the clock and random source before anything runs.
func connect(ctx context.Context, cfg Config, adjust func(*Client)) (*Client, error) {
	cfg, urls, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	c := &Client{
		cfg:     cfg,
		backoff: newBackoff(cfg.BackoffMin, cfg.BackoffMax),
		log:     cfg.Logger.With("client_id", cfg.ClientID),
		now:     time.Now,
		after:   time.After,
		fatal:   make(chan error, 1),
		subs:    map[string]byte{},
	}
	if adjust != nil {
		adjust(c)
	}
	c.ctx, c.stop = context.WithCancel(context.Background())
	cm, err := autopaho.NewConnection(c.ctx, c.pahoConfig(urls))
	if err != nil {
		c.stop()
		return nil, fmt.Errorf("client: %w", err)
	}
	c.cm = cm
	awaited := make(chan error, 1)
	go func() { awaited <- cm.AwaitConnection(ctx) }()
	select {
	case err = <-awaited:
		if err == nil {
			return c, nil
		}
		c.mu.Lock()
		if c.lastErr != nil {
			err = fmt.Errorf("%w; last attempt: %w", err, c.lastErr)
		}
		c.mu.Unlock()
		err = fmt.Errorf("client: not connected: %w", err)
	case err = <-c.fatal:
	}
	c.shutdown()
	return nil, err
}

func (c *Client) pahoConfig(urls []*url.URL) autopaho.ClientConfig {
	return autopaho.ClientConfig{
		ServerUrls:                    urls,
		TlsCfg:                        c.cfg.TLS,
		KeepAlive:                     uint16(c.cfg.KeepAlive / time.Second),
		CleanStartOnInitialConnection: c.cfg.CleanStart,
		SessionExpiryInterval:         uint32(c.cfg.SessionExpiry / time.Second),
		ReconnectBackoff:              c.reconnectDelay,
		ConnectTimeout:                c.cfg.ConnectTimeout,
		ConnectUsername:               c.cfg.Username,
		ConnectPacketBuilder:          c.buildConnect,
		OnConnectionUp:                c.onUp,
		OnConnectionDown:              c.onDown,
		OnConnectError:                c.onConnectError,
		ClientConfig: paho.ClientConfig{
			ClientID: c.cfg.ClientID,
			// paho calls the handler after a CONNACK that names a method; idmq never continues an exchange.
			AuthHandler:        noExchange{},
			OnPublishReceived:  []func(paho.PublishReceived) (bool, error){c.route},
			OnServerDisconnect: c.onServerDisconnect,
			OnClientError:      c.onClientError,
		},
	}
}

// reconnectDelay is autopaho's backoff. autopaho numbers the attempts of every outage from 0, so the first
// attempt ever is immediate, but the first after a lost connection is already jittered: that is the one a
// whole fleet makes together when a broker restarts.
func (c *Client) reconnectDelay(attempt int) time.Duration {
	c.mu.Lock()
	reconnecting := c.up
	c.mu.Unlock()
	if !reconnecting {
		if attempt == 0 {
			return 0
		}
		attempt--
	}
	return c.backoff.delay(attempt)
}

// buildConnect puts a fresh token in the CONNECT's Authentication Data.
func (c *Client) buildConnect(cp *paho.Connect, _ *url.URL) (*paho.Connect, error) {
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.ConnectTimeout)
	defer cancel()
	token, life, err := c.fetch(ctx)
	if err != nil {
		return nil, err
	}
	if cp.Properties == nil {
		cp.Properties = &paho.ConnectProperties{}
	}
	cp.Properties.AuthMethod = authMethod
	cp.Properties.AuthData = []byte(token)
	c.mu.Lock()
	c.pending = life
	c.mu.Unlock()
	return cp, nil
}

// fetch calls the token source and reads the token's expiry.
func (c *Client) fetch(ctx context.Context) (string, issued, error) {
	c.tokenMu.Lock()
	defer c.tokenMu.Unlock()
	token, err := c.cfg.Token(ctx)
	if err != nil {
		return "", issued{}, &TokenError{Err: err}
	}
	exp, err := tokenExpiry(token)
	if err != nil {
		return "", issued{}, &TokenError{Err: err}
	}
	return token, issued{obtained: c.now(), exp: exp}, nil
}

func (c *Client) onConnectError(err error) {
	var refused *autopaho.ConnackError
	if errors.As(err, &refused) {
		err = &ReasonError{Packet: "CONNACK", Code: refused.ReasonCode, Reason: refused.Reason}
	}
	c.mu.Lock()
	c.lastErr = err
	first := !c.up
	c.mu.Unlock()
	var tokenErr *TokenError
	if first && (errors.Is(err, ErrAuth) || errors.As(err, &tokenErr)) {
		select {
		case c.fatal <- err:
		default:
		}
		return
	}
	c.log.Warn("client: connection attempt failed", "error", err)
	c.reportError(err)
}

func (c *Client) onUp(cm *autopaho.ConnectionManager, ack *paho.Connack) {
	ctx, cancel := context.WithCancel(c.ctx)
	cs := &connState{cancel: cancel}
	c.mu.Lock()
	c.up = true
	c.current = cs
	life := c.pending
	var resubscribe []paho.SubscribeOptions
	if !ack.SessionPresent {
		for topic, qos := range c.subs {
			resubscribe = append(resubscribe, paho.SubscribeOptions{Topic: topic, QoS: qos})
		}
	}
	c.mu.Unlock()
	c.log.Info("client: connected", "session_present", ack.SessionPresent, "token_expires", life.exp)
	go c.refreshLoop(ctx, cm, cs, life)
	if len(resubscribe) > 0 {
		go c.resubscribe(ctx, cm, resubscribe)
	}
	if c.cfg.OnConnect != nil {
		c.cfg.OnConnect(ack)
	}
}

// onDown stops the lost connection's refresh loop; autopaho reconnects unless Disconnect was called.
func (c *Client) onDown() bool {
	c.mu.Lock()
	cs := c.current
	c.mu.Unlock()
	if cs != nil {
		cs.cancel()
	}
	return c.ctx.Err() == nil
}

func (c *Client) onServerDisconnect(d *paho.Disconnect) {
	c.mu.Lock()
	cs := c.current
	c.mu.Unlock()
	err := &ReasonError{Packet: "DISCONNECT", Code: d.ReasonCode}
	if d.Properties != nil {
		err.Reason = d.Properties.ReasonString
	}
	if cs != nil {
		err.Reauth = cs.reauth.Load()
	}
	c.lost(cs, err)
}

func (c *Client) onClientError(err error) {
	c.mu.Lock()
	cs := c.current
	c.mu.Unlock()
	c.lost(cs, err)
}

// lost reports the end of a connection once, however many of paho's callbacks announce it.
func (c *Client) lost(cs *connState, err error) {
	if cs == nil {
		return
	}
	cs.once.Do(func() {
		cs.cancel()
		if c.ctx.Err() != nil {
			return // Disconnect was called
		}
		c.log.Warn("client: connection lost", "error", err)
		if c.cfg.OnConnectionLost != nil {
			c.cfg.OnConnectionLost(err)
		}
	})
}

func (c *Client) reportError(err error) {
	if c.cfg.OnError != nil {
		c.cfg.OnError(err)
	}
}

func (c *Client) route(pr paho.PublishReceived) (bool, error) {
	if c.cfg.Router != nil {
		c.cfg.Router.Route(pr.Packet.Packet())
	}
	return true, nil
}

func (c *Client) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.ConnectTimeout)
	defer cancel()
	_ = c.cm.Disconnect(ctx)
	c.stop()
}

// noExchange is the AuthHandler paho requires once a CONNACK names a method. idmq never sends AUTH 0x18
// (continue authentication), so Authenticate is not reached against idmq; a broker that did would get an
// AUTH without a method and end the exchange.
type noExchange struct{}

func (noExchange) Authenticate(*paho.Auth) *paho.Auth { return &paho.Auth{ReasonCode: 0x18} }
func (noExchange) Authenticated()                     {}

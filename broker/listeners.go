package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/idmq/idmq/internal/wsconn"
	"github.com/idmq/idmq/mochifix"
)

// openListener binds the address now, so a port conflict fails `serve` before any client is accepted.
// TCP/TLS use mochi's Net listener over our socket; websockets use wsListener. mochifix wraps each: its
// Serve waits for the write-ahead log's replay, its Close avoids mochi's shutdown deadlock, and TCP/TLS
// connections get the CONNECT deadline and coalesced acknowledgements.
func (b *Broker) openListener(id string, lc ListenerConfig, tlsConf *tls.Config) (listeners.Listener, error) {
	ln, err := net.Listen("tcp", lc.Address)
	if err != nil {
		return nil, err
	}
	netOpts := mochifix.ListenerOptions{ConnectTimeout: b.cfg.MQTT.ConnectTimeout, Coalesce: true}
	switch lc.Type {
	case ListenerTCP:
		return b.fixes.Listener(listeners.NewNet(id, ln), netOpts), nil
	case ListenerTLS:
		return b.fixes.Listener(listeners.NewNet(id, tls.NewListener(ln, tlsConf)), netOpts), nil
	default:
		path := lc.Path
		if path == "" {
			path = "/mqtt"
		}
		ws := newWSListener(id, ln, tlsConf, path, b.cfg.MQTT.MaxPacketSize, b.cfg.MQTT.ConnectTimeout)
		ws.stopClients = mochifix.StopClients(b.server)
		return b.fixes.Listener(ws, mochifix.ListenerOptions{}), nil
	}
}

// wsListener accepts MQTT over WebSocket (binary frames, subprotocol "mqtt") on a socket we bound.
type wsListener struct {
	id        string
	ln        net.Listener
	tls       *tls.Config
	path      string
	timeout   time.Duration
	readLimit int64
	server    *http.Server
	log       *slog.Logger
	upgrader  websocket.Upgrader
	closeOnce sync.Once
	// stopClients replaces mochi's callback on Close (mochifix.StopClients).
	stopClients listeners.CloseFn
}

func newWSListener(id string, ln net.Listener, tlsConf *tls.Config, path string, maxPacket uint32, connectTimeout time.Duration) *wsListener {
	return &wsListener{
		id: id, ln: ln, tls: tlsConf, path: path, timeout: connectTimeout,
		// a websocket message may carry one MQTT packet plus its fixed header; nothing larger is legitimate
		readLimit: int64(maxPacket) + 5,
		upgrader: websocket.Upgrader{
			Subprotocols:     []string{"mqtt"},
			HandshakeTimeout: connectTimeout,
			// Browsers connect from any page: MQTT over WS authenticates in CONNECT, never with cookies,
			// so the origin grants nothing and is not checked.
			CheckOrigin: func(*http.Request) bool { return true },
		},
	}
}

func (l *wsListener) ID() string      { return l.id }
func (l *wsListener) Address() string { return l.ln.Addr().String() }
func (l *wsListener) Protocol() string {
	return map[bool]string{true: "wss", false: "ws"}[l.tls != nil]
}

func (l *wsListener) Init(log *slog.Logger) error {
	l.log = log
	l.server = &http.Server{
		ReadHeaderTimeout: l.timeout,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return nil
}

func (l *wsListener) Serve(establish listeners.EstablishFn) {
	ln := l.ln
	if l.tls != nil {
		ln = tls.NewListener(ln, l.tls)
	}
	l.server.Handler = l.withEstablish(establish)
	if err := l.server.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		l.log.Error("websocket listener stopped", "listener", l.id, "error", err)
	}
}

func (l *wsListener) withEstablish(establish listeners.EstablishFn) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(l.path, func(w http.ResponseWriter, r *http.Request) {
		c, err := l.upgrader.Upgrade(w, r, nil)
		if err != nil {
			return // the upgrader already answered with an HTTP error
		}
		defer c.Close()
		c.SetReadLimit(l.readLimit)
		conn := wsconn.New(c)
		_ = conn.SetDeadline(time.Now().Add(l.timeout))
		if err := establish(l.id, conn); err != nil {
			l.log.Debug("websocket client ended", "listener", l.id, "error", err)
		}
	})
	return mux
}

func (l *wsListener) Close(listeners.CloseFn) {
	l.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = l.server.Shutdown(ctx)
	})
	l.stopClients(l.id)
}

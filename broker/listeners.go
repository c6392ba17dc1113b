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
)

// openListener binds the address now, so a port conflict fails `serve` before any client is accepted.
// TCP/TLS use mochi's Net listener over our socket; websockets use wsListener.
func openListener(id string, lc ListenerConfig, tlsConf *tls.Config, maxPacket uint32, connectTimeout time.Duration, stopClients listeners.CloseFn) (listeners.Listener, error) {
	ln, err := net.Listen("tcp", lc.Address)
	if err != nil {
		return nil, err
	}
	switch lc.Type {
	case ListenerTCP:
		return &connectDeadline{Listener: listeners.NewNet(id, ln), timeout: connectTimeout, stopClients: stopClients}, nil
	case ListenerTLS:
		return &connectDeadline{Listener: listeners.NewNet(id, tls.NewListener(ln, tlsConf)), timeout: connectTimeout, stopClients: stopClients}, nil
	default:
		path := lc.Path
		if path == "" {
			path = "/mqtt"
		}
		ws := newWSListener(id, ln, tlsConf, path, maxPacket, connectTimeout)
		ws.stopClients = stopClients
		return ws, nil
	}
}

// gatedListener holds Serve until open is closed. mochi's Serve restores the store and then starts every
// listener at once, but the broker must replay its write-ahead log into the restored sessions before the
// first client can take one over (wal.go). The socket is already bound, so connections arriving meanwhile
// wait in its backlog.
type gatedListener struct {
	listeners.Listener
	open <-chan struct{}
}

func (g gatedListener) Serve(establish listeners.EstablishFn) {
	<-g.open
	g.Listener.Serve(establish)
}

// connectDeadline closes connections that send no CONNECT in time: mochi sets no deadline before CONNECT,
// so a silent socket would otherwise be held forever. mochi replaces the deadline with the keepalive one
// once CONNECT is read.
type connectDeadline struct {
	listeners.Listener
	timeout     time.Duration
	log         *slog.Logger
	stopClients listeners.CloseFn
}

// Close replaces mochi's client-closing callback with stopClients: mochi v2.7.9's closeListenerClients
// (Clients.GetByListener) read-locks the client map twice and deadlocks when a client ends at the same
// moment, which hangs shutdown.
func (l *connectDeadline) Close(listeners.CloseFn) { l.Listener.Close(l.stopClients) }

func (l *connectDeadline) Init(log *slog.Logger) error {
	l.log = log
	return l.Listener.Init(log)
}

func (l *connectDeadline) Serve(establish listeners.EstablishFn) {
	l.Listener.Serve(func(id string, c net.Conn) error {
		_ = c.SetDeadline(time.Now().Add(l.timeout))
		// Refusals are already logged, with their reason, by the hook that refused; mochi's listener would
		// add a second, message-less warning for each.
		if err := establish(id, newCoalescingConn(c)); err != nil {
			l.log.Debug("connection ended", "listener", id, "remote", c.RemoteAddr().String(), "error", err)
		}
		return nil
	})
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
	// stopClients replaces mochi's callback on Close (see connectDeadline.Close).
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

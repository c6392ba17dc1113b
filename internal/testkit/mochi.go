package testkit

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/idmq/idmq/mochifix"
)

// MochiOptions says what kind of mochi server a test runs.
type MochiOptions struct {
	// InlineClient lets the test publish from the server itself.
	InlineClient bool
	// WebSocket adds a WebSocket listener (any path) beside the TCP one.
	WebSocket bool
	// TLS, when set, makes both listeners serve TLS.
	TLS *tls.Config
}

// Mochi is a bare mochi server on loopback.
type Mochi struct {
	Server *mqtt.Server
	TCP    string // host:port of the TCP (or TLS) listener, once serving
	WS     string // host:port of the WebSocket listener; empty without MochiOptions.WebSocket

	opts MochiOptions
}

// NewMochi makes the server, logging nowhere, without serving: hooks that need the server (to send a
// packet, to stop a client) are built with m.Server before Serve adds them.
func NewMochi(o MochiOptions) *Mochi {
	return &Mochi{Server: mqtt.New(&mqtt.Options{InlineClient: o.InlineClient, Logger: slog.New(slog.DiscardHandler)}), opts: o}
}

// StartMochi is NewMochi then Serve.
func StartMochi(t testing.TB, o MochiOptions, hooks ...mqtt.Hook) *Mochi {
	t.Helper()
	m := NewMochi(o)
	m.Serve(t, hooks...)
	return m
}

// Serve adds hooks in order, each with a nil config, then the listeners, and serves until the test ends,
// when it stops the server, clients first. Without hooks every client is refused: allowing is the test's
// explicit choice (mochi's auth.AllowHook). Hooks that hold resources are closed by the test in a Cleanup
// registered before Serve (cleanups run last-first, so the server is down by then).
func (m *Mochi) Serve(t testing.TB, hooks ...mqtt.Hook) {
	t.Helper()
	s := m.Server
	for _, h := range hooks {
		if err := s.AddHook(h, nil); err != nil {
			t.Fatal(err)
		}
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "tcp", Address: "127.0.0.1:0", TLSConfig: m.opts.TLS})
	if err := s.AddListener(mochifix.Listener(tcp, s, mochifix.ListenerOptions{})); err != nil {
		t.Fatal(err)
	}
	m.TCP = tcp.Address()
	if m.opts.WebSocket {
		m.WS = fmt.Sprintf("127.0.0.1:%d", FreePort(t)) // mochi binds it only when serving
		ws := listeners.NewWebsocket(listeners.Config{ID: "ws", Address: m.WS, TLSConfig: m.opts.TLS})
		if err := s.AddListener(mochifix.Listener(ws, s, mochifix.ListenerOptions{})); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mochifix.CloseServer(s) })
	if m.WS != "" {
		waitListening(t, m.WS)
	}
}

func waitListening(t testing.TB, addr string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listening on %s: %v", addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

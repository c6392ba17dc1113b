package testkit

import (
	"crypto/tls"
	"log/slog"
	"net"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/idmq/idmq/internal/mochitest"
)

// MochiOptions says what StartMochi runs.
type MochiOptions struct {
	// Hooks are added in order, each with a nil config. With none, every client is refused: allowing is
	// the test's explicit choice (mochi's auth.AllowHook).
	Hooks []mqtt.Hook
	// InlineClient lets the test publish from the server itself.
	InlineClient bool
	// WebSocket adds a WebSocket listener (any path) beside the TCP one.
	WebSocket bool
	// TLS, when set, makes both listeners serve TLS.
	TLS *tls.Config
}

// Mochi is a bare mochi server on loopback, serving until the test ends.
type Mochi struct {
	Server *mqtt.Server
	TCP    string // host:port of the TCP (or TLS) listener
	WS     string // host:port of the WebSocket listener; empty without MochiOptions.WebSocket
}

// StartMochi runs a mochi server with the options' hooks and stops it, clients first, when the test ends.
// Hooks that hold resources of their own are closed by the test, in a Cleanup registered before this call
// (cleanups run last-first, so the server is down by then).
func StartMochi(t testing.TB, o MochiOptions) *Mochi {
	t.Helper()
	s := mqtt.New(&mqtt.Options{InlineClient: o.InlineClient, Logger: slog.New(slog.DiscardHandler)})
	for _, h := range o.Hooks {
		if err := s.AddHook(h, nil); err != nil {
			t.Fatal(err)
		}
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "tcp", Address: "127.0.0.1:0", TLSConfig: o.TLS})
	if err := s.AddListener(mochitest.Listener(tcp)); err != nil {
		t.Fatal(err)
	}
	m := &Mochi{Server: s, TCP: tcp.Address()}
	if o.WebSocket {
		m.WS = reservePort(t)
		ws := listeners.NewWebsocket(listeners.Config{ID: "ws", Address: m.WS, TLSConfig: o.TLS})
		if err := s.AddListener(mochitest.Listener(ws)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mochitest.Close(s) })
	if m.WS != "" {
		waitListening(t, m.WS)
	}
	return m
}

// reservePort returns a loopback address that was free a moment ago, for a listener that binds only
// when it serves (mochi's WebSocket listener).
func reservePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
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

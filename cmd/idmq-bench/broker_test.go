package main

import (
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// testBroker is a real in-process mochi broker on loopback: TCP and WebSocket listeners.
type testBroker struct {
	server *mqtt.Server
	tcp    string
	ws     string
}

// startBroker runs mochi with hook (allow-all when nil) until the test ends.
func startBroker(t *testing.T, hook mqtt.Hook) *testBroker {
	t.Helper()
	s := mqtt.New(&mqtt.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if hook == nil {
		hook = new(auth.AllowHook)
	}
	if err := s.AddHook(hook, nil); err != nil {
		t.Fatal(err)
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "tcp", Address: "127.0.0.1:0"})
	if err := s.AddListener(noClientCloser{tcp}); err != nil {
		t.Fatal(err)
	}
	// mochi's websocket listener binds only when it serves, so reserve a port first.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wsAddr := l.Addr().String()
	l.Close()
	if err := s.AddListener(noClientCloser{listeners.NewWebsocket(listeners.Config{ID: "ws", Address: wsAddr})}); err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve() }()
	t.Cleanup(func() { closeServer(s) })
	waitListening(t, wsAddr)
	return &testBroker{server: s, tcp: tcp.Address(), ws: wsAddr}
}

func waitListening(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("broker not listening on %s: %v", addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// noClientCloser keeps mochi v2.7.9's Server.Close away from closeListenerClients, whose
// Clients.GetByListener read-locks the client map twice and deadlocks shutdown when a client ends at the
// same moment; closeServer stops the clients from a copied list instead.
type noClientCloser struct{ listeners.Listener }

func (l noClientCloser) Close(listeners.CloseFn) { l.Listener.Close(func(string) {}) }

func closeServer(s *mqtt.Server) {
	stop := func() {
		for _, cl := range s.Clients.GetAll() {
			cl.Stop(packets.ErrServerShuttingDown)
		}
	}
	stop()
	_ = s.Close()
	stop() // any client that connected while the listener was closing
}

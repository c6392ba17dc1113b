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

	"github.com/idmq/idmq/mochifix"
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
	if err := s.AddListener(mochifix.Listener(tcp, s, mochifix.ListenerOptions{})); err != nil {
		t.Fatal(err)
	}
	// mochi's websocket listener binds only when it serves, so reserve a port first.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wsAddr := l.Addr().String()
	l.Close()
	if err := s.AddListener(mochifix.Listener(listeners.NewWebsocket(listeners.Config{ID: "ws", Address: wsAddr}), s, mochifix.ListenerOptions{})); err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve() }()
	t.Cleanup(func() { _ = mochifix.CloseServer(s) })
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

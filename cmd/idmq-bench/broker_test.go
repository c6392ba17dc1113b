package main

import (
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"

	"github.com/idmq/idmq/internal/testkit"
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
	if hook == nil {
		hook = new(auth.AllowHook)
	}
	m := testkit.StartMochi(t, testkit.MochiOptions{WebSocket: true}, hook)
	return &testBroker{server: m.Server, tcp: m.TCP, ws: m.WS}
}

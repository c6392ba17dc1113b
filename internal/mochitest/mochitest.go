// Package mochitest holds what idmq's tests need around a bare mochi server.
package mochitest

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Listener wraps a mochi listener so that Server.Close never calls mochi's closeListenerClients: in mochi
// v2.7.9 its Clients.GetByListener read-locks the client map twice and deadlocks shutdown when a client ends
// at the same moment. Close the server with Close instead, which stops clients from a copied list.
func Listener(l listeners.Listener) listeners.Listener { return noClientCloser{l} }

type noClientCloser struct{ listeners.Listener }

func (l noClientCloser) Close(listeners.CloseFn) { l.Listener.Close(func(string) {}) }

// Close stops every client, closes the server, then stops any client that connected meanwhile.
func Close(s *mqtt.Server) {
	stop := func() {
		for _, cl := range s.Clients.GetAll() {
			cl.Stop(packets.ErrServerShuttingDown)
		}
	}
	stop()
	_ = s.Close()
	stop()
}

package authhook

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/idmq/idmq/mochifix"
)

// Disconnect ends a client's connection the way its protocol version allows: an MQTT 5 client gets
// DISCONNECT with code and reason (code.Reason when reason is ""); a 3.1.1 client has its network
// connection closed. The Will is published, once (mochifix.Disconnect says how). The client's expiry timer
// is stopped and its identity can no longer change. It returns ErrNotConnected when there is no open
// connection.
func (h *Hook) Disconnect(cl *mqtt.Client, code packets.Code, reason string) error {
	if cl == nil || cl.Net.Conn == nil || cl.Net.Inline || cl.Closed() {
		return ErrNotConnected
	}
	if s := h.session(cl); s != nil {
		s.mu.Lock()
		if s.closed {
			// An earlier Disconnect closed the connection and mochi has not ended the client yet.
			s.mu.Unlock()
			return ErrNotConnected
		}
		s.closed, s.ending = true, true
		h.stopTimerLocked(s)
		s.mu.Unlock()
	}
	if err := mochifix.Disconnect(cl, code, reason); err != nil {
		return ErrNotConnected
	}
	return nil
}

package authhook

import (
	"bytes"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// disconnectWriteTimeout bounds the write of a DISCONNECT to a client that stopped reading.
const disconnectWriteTimeout = time.Second

// Disconnect ends a client's connection the way its protocol version allows: an MQTT 5 client gets
// DISCONNECT with code and reason (code.Reason when reason is ""); a 3.1.1 client has its network
// connection closed, since a 3.1.1 server never sends DISCONNECT. The client's expiry timer is stopped and
// its identity can no longer change. It returns ErrNotConnected when there is no open connection.
//
// The Will is published, once, as for any end the client did not ask for [MQTT-3.1.2-8]. That is why
// Disconnect closes the network connection rather than calling mochi's Client.Stop or
// Server.DisconnectClient: Stop marks the client closed first, and a read loop that sees that between two
// packets returns without error, which makes mochi skip the Will. A closed socket always fails the read, and
// mochi then sends the Will itself (honouring Will Delay Interval and the OnWill hooks). The cost: packets
// the client sent just before, already in mochi's read buffer (2 KiB by default), are still processed.
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
	if cl.Properties.ProtocolVersion >= 5 {
		if reason == "" && code.Code >= packets.ErrUnspecifiedError.Code {
			reason = code.Reason
		}
		writeDisconnect(cl, code.Code, reason)
	}
	_ = cl.Net.Conn.Close()
	return nil
}

// writeDisconnect writes the packet itself instead of through Client.WritePacket, which would drop the Reason
// String of a client that set Request Problem Information to 0 (paho.golang does by default), though the
// spec allows it on DISCONNECT [MQTT-3.1.2-29], and which may leave the packet in a buffer that the close
// then discards. The client's lock keeps it from interleaving with mochi's own writes. Best effort: the
// connection is closed whether or not the write succeeds.
func writeDisconnect(cl *mqtt.Client, code byte, reason string) {
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Disconnect},
		ProtocolVersion: 5,
		ReasonCode:      code,
		Properties:      packets.Properties{ReasonString: reason},                     // [MQTT-3.14.2-1]
		Mods:            packets.Mods{MaxSize: cl.Properties.Props.MaximumPacketSize}, // drops the reason if too big [MQTT-3.1.2-25]
	}
	var buf bytes.Buffer
	if err := pk.DisconnectEncode(&buf); err != nil {
		return
	}
	cl.Lock()
	defer cl.Unlock()
	_ = cl.Net.Conn.SetWriteDeadline(time.Now().Add(disconnectWriteTimeout))
	_, _ = cl.Net.Conn.Write(buf.Bytes())
}

package mochifix

// Defect: mochi v2.7.9's Client.Stop and Server.DisconnectClient mark the client closed first, and a read
// loop that sees that between two packets returns without error, so mochi skips the Will that an end the
// client did not ask for must publish [MQTT-3.1.2-8]. Its Client.WritePacket also drops the Reason String
// of a client that set Request Problem Information to 0 (paho.golang does by default), though the spec
// allows it on DISCONNECT [MQTT-3.1.2-29], and may leave the packet in a buffer the close then discards.
// Fix: Disconnect writes the DISCONNECT itself and closes the network connection: the read then fails, and
// mochi sends the Will itself (honouring Will Delay Interval and the OnWill hooks).
// Upstream: none filed.
// Proof: TestDisconnectBusyClientPublishesWillOnce and TestDisconnectV5 (authhook/disconnect_test.go),
// TestDisconnectWritesReasonAndPublishesWill (disconnect_test.go).
// Delete when: mochi's DisconnectClient publishes the Will and sends the Reason String.

import (
	"bytes"
	"errors"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// disconnectWriteTimeout bounds the write of a DISCONNECT to a client that stopped reading.
const disconnectWriteTimeout = time.Second

// ErrNotConnected: the client has no open network connection to end.
var ErrNotConnected = errors.New("mochifix: client not connected")

// Disconnect ends a client's connection the way its protocol version allows: an MQTT 5 client gets
// DISCONNECT with code and reason (code.Reason when reason is "" and code is an error); a 3.1.1 client has
// its network connection closed, since a 3.1.1 server never sends DISCONNECT. The Will is published, once.
// Packets the client sent just before, already in mochi's read buffer, are still processed.
func Disconnect(cl *mqtt.Client, code packets.Code, reason string) error {
	if cl == nil || cl.Net.Conn == nil || cl.Net.Inline || cl.Closed() {
		return ErrNotConnected
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

// writeDisconnect writes under the client's lock, so the packet does not interleave with mochi's own
// writes. Best effort: the connection is closed whether or not the write succeeds.
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

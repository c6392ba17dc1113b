package mochifix

// Defect: mochi v2.7.9's CONNACK never carries the Authentication Method, though a successful CONNACK
// must repeat the one the client's CONNECT named [MQTT-4.12.0-5]; clients that check (enhanced
// authentication libraries) treat the connection as failed.
// Fix: authMethodEcho sets the property on a successful CONNACK to a client that sent one, as the
// CONNACK is encoded. A client that sent none gets none [MQTT-4.12.0-6]. On unless
// Options.SkipAuthMethodEcho: paho.golang (v0.23.0, client.go expectConnack) calls
// ClientConfig.AuthHandler.Authenticated() on such a CONNACK without the nil check its other AUTH paths
// have, so a paho.golang client that sends a method but sets no AuthHandler panics (a client bug; the
// CONNACK is what the spec requires). idmq's Go SDK and test kit set an AuthHandler.
// Upstream: none filed.
// Proof: TestConnackEchoesAuthenticationMethod (authmethod_test.go).
// Delete when: mochi's SendConnack copies the Authentication Method.

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

type authMethodEcho struct{ mqtt.HookBase }

func (h *authMethodEcho) ID() string { return "idmq-auth-method-echo" }

func (h *authMethodEcho) Provides(b byte) bool { return b == mqtt.OnPacketEncode }

func (h *authMethodEcho) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Connack && pk.ReasonCode < packets.ErrUnspecifiedError.Code &&
		cl.Properties.ProtocolVersion == 5 && cl.Properties.Props.AuthenticationMethod != "" {
		pk.Properties.AuthenticationMethod = cl.Properties.Props.AuthenticationMethod
	}
	return pk
}

package mochifix

// Defect: an MQTT 5 client that sent Request Problem Information 0 gets every packet encoded without Reason
// String and User Properties, PUBLISH included, so the user properties a publisher attached never reach it.
// [MQTT-3.1.2-29] forbids them only on packets other than PUBLISH, CONNACK and DISCONNECT; paho.golang sends
// 0 unless told otherwise, so most Go subscribers lose them.
// Fix: clear the flag mochi set on an outgoing PUBLISH before it is encoded (OnPacketEncode runs after mochi
// decided). A PUBLISH has no Reason String, so only its User Properties come back.
// Upstream: none filed.
// Proof: TestUserPropertiesReachAClientThatAskedForNoProblemInformation.
// Delete when: mochi applies DisallowProblemInfo to packets other than PUBLISH only.

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

type publishKeepsUserProperties struct {
	mqtt.HookBase
}

func (h *publishKeepsUserProperties) ID() string { return "idmq-publish-keeps-user-properties" }

func (h *publishKeepsUserProperties) Provides(b byte) bool { return b == mqtt.OnPacketEncode }

func (h *publishKeepsUserProperties) OnPacketEncode(_ *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Publish {
		pk.Mods.DisallowProblemInfo = false
	}
	return pk
}

package broker

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// sendQuotaOffHook works around a deadlock in mochi v2.7.9: when a v5 client announces a Receive Maximum,
// mochi tracks a send quota and, after each packet the client sends, calls Inflight.NextImmediate, which
// takes the inflight read lock twice. A publisher waiting for the write lock in between blocks both
// goroutines forever (seen at once under QoS 1 fan-in; TestQoS1FanInToClientWithReceiveMaximum).
// Turning the quota off keeps mochi on the path it takes for 3.1.1 clients. The cost: idmq does not hold
// back QoS 1/2 deliveries at the client's Receive Maximum; max_inflight still bounds what is kept per client.
type sendQuotaOffHook struct {
	mqtt.HookBase
}

func (h *sendQuotaOffHook) ID() string { return "idmq-send-quota-off" }

func (h *sendQuotaOffHook) Provides(b byte) bool { return b == mqtt.OnSessionEstablished }

// OnSessionEstablished runs after mochi set the quota (ParseConnect, or inheriting a taken-over session)
// and before the client's read loop starts, so NextImmediate is never reached.
func (h *sendQuotaOffHook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	cl.State.Inflight.ResetSendQuota(0)
}

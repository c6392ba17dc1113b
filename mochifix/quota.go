package mochifix

// Defect: when an MQTT 5 client announces a Receive Maximum, mochi v2.7.9 tracks a send quota and, after
// each packet the client sends, calls Inflight.NextImmediate, which takes the in-flight read lock twice. A
// publisher waiting for the write lock in between blocks both goroutines forever (at once under QoS 1
// fan-in).
// Fix: turn the quota off once the session is established, which keeps mochi on its 3.1.1 path; the
// client's Receive Maximum is then enforced by receivemax.go.
// Upstream: none filed.
// Proof: TestQoS1FanInToClientWithReceiveMaximum (e2e).
// Delete when: mochi's Inflight.NextImmediate takes its lock once.

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

type sendQuotaOff struct {
	mqtt.HookBase
}

func (h *sendQuotaOff) ID() string { return "idmq-send-quota-off" }

func (h *sendQuotaOff) Provides(b byte) bool { return b == mqtt.OnSessionEstablished }

// OnSessionEstablished runs after mochi set the quota (ParseConnect, or inheriting a taken-over session)
// and before the client's read loop starts, so NextImmediate is never reached.
func (h *sendQuotaOff) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	cl.State.Inflight.ResetSendQuota(0)
}

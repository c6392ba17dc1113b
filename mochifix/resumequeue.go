package mochifix

// Defect: when a client resumes its session from a new connection, mochi v2.7.9 moves the in-flight
// messages to the new connection and then drops them from the old one through OnQosDropped, which makes
// the store delete their records: both connections share the client id the records are keyed on. Until
// the new connection resends them (which stores them again) a kill -9 loses the whole queue.
// Fix: skip the store delete for a connection whose session was taken over. A clean start takes over too,
// but mochi marks the old connection only after dropping its messages, so those deletes still happen.
// Upstream: none filed.
// Proof: TestStoreKeepsQueueAcrossSessionTakeover (store_test.go).
// Delete when: mochi stops dropping the messages it moved to the new connection.

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

func (h *store) OnQosDropped(cl *mqtt.Client, pk packets.Packet) {
	if cl.IsTakenOver() {
		return
	}
	h.Hook.OnQosDropped(cl, pk)
}

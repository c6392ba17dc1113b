package mochifix

// Defect: mochi v2.7.9's bolt and redis hooks persist in-flight QoS 1/2 messages without their packet id.
// After a restart every such message is resent with id 0, which mochi itself rejects ("missing packet
// id"), so a persistent session's whole offline queue is lost.
// Fix: both hooks end the storage key with ":<packet id>"; the id is recovered from there on load.
// Upstream: mochi-mqtt/server#545.
// Proof: TestStoreRestoresPacketIDs (store_test.go); end to end, TestPersistentSessionSurvivesRestart.
// Delete when: mochi stores PacketID in the bolt and redis records.

import (
	"strconv"
	"strings"

	"github.com/mochi-mqtt/server/v2/hooks/storage"
)

func (h *store) StoredInflightMessages() ([]storage.Message, error) {
	msgs, err := h.Hook.StoredInflightMessages()
	for i := range msgs {
		if msgs[i].PacketID != 0 {
			continue
		}
		if at := strings.LastIndexByte(msgs[i].ID, ':'); at >= 0 {
			if id, perr := strconv.ParseUint(msgs[i].ID[at+1:], 10, 16); perr == nil {
				msgs[i].PacketID = uint16(id)
			}
		}
	}
	return msgs, err
}

package mochifix

// Defect: mochi v2.7.9 reads the server-info record from the store at every start, and its bolt and redis
// hooks log a bare ERROR "key not found" when a new store has none, which alarms operators for nothing.
// Fix: write an empty record right after the store opens. The record only matters with mochi's
// RestoreSysInfoOnRestart, which Add does not set.
// Upstream: none filed.
// Proof: TestStoreWritesEmptySysInfo (store_test.go).
// Delete when: mochi's storage hooks treat a missing server-info record as empty.

import "github.com/mochi-mqtt/server/v2/system"

// Init opens the store, then writes the empty server-info record.
func (h *store) Init(config any) error {
	if err := h.Hook.Init(config); err != nil {
		return err
	}
	h.Hook.OnSysInfoTick(&system.Info{})
	return nil
}

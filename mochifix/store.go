package mochifix

import (
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// store wraps a mochi storage hook (bolt, redis, or any hook with the storage methods) with the fixes to
// mochi's persistence, one file each: packetid.go, resumequeue.go, qos2pubrel.go, sysinfo.go. With a
// write-ahead log it also writes the log's records (wal_hook.go). One hook owns the whole sequence — the
// log's pending record, the queue/queued records around the store's own write, done — so no hook order can
// separate its steps; Add adds it last, so no later hook can reject a publish it has logged.
type store struct {
	mqtt.Hook
	wal      *walLog // nil: no write-ahead log
	stopOnce sync.Once
	stopErr  error
}

var _ mqtt.Hook = (*store)(nil)

func (h *store) Provides(b byte) bool {
	switch b {
	case mqtt.OnPacketRead:
		return true
	case mqtt.OnPublish, mqtt.OnPublished, mqtt.OnDisconnect:
		if h.wal != nil {
			return true
		}
	}
	return h.Hook.Provides(b)
}

// OnDisconnect passes the disconnect to the store, then tells the log the client's publish in progress, if
// any, will not finish.
func (h *store) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	if h.Hook.Provides(mqtt.OnDisconnect) {
		h.Hook.OnDisconnect(cl, err, expire)
	}
	if h.wal != nil {
		h.wal.abandon(cl)
	}
}

// Stop closes the store, then the log. Both mochi's Server.Close and Fixes.Close call it; the second call
// does nothing.
func (h *store) Stop() error {
	h.stopOnce.Do(func() {
		h.stopErr = h.Hook.Stop()
		if h.wal != nil {
			if err := h.wal.close(); h.stopErr == nil {
				h.stopErr = err
			}
		}
	})
	return h.stopErr
}

// OnQosPublish stores a subscriber's in-flight copy; with a log, the store write is bracketed by the
// log's queue and queued records (wal_hook.go).
func (h *store) OnQosPublish(cl *mqtt.Client, pk packets.Packet, sent int64, resends int) {
	if h.wal == nil {
		h.Hook.OnQosPublish(cl, pk, sent, resends)
		return
	}
	h.persistMarked(cl, pk, sent, resends)
}

package broker

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"github.com/mochi-mqtt/server/v2/hooks/storage/redis"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/mochi-mqtt/server/v2/system"
	"go.etcd.io/bbolt"
)

// addStorage attaches the persistence hook. A store that cannot be opened (corrupt, locked by another
// process, unreachable) is an error: starting empty would silently drop every persisted session.
func (b *Broker) addStorage() error {
	switch b.cfg.Storage.Type {
	case StorageMemory:
		b.storeOK.Store(true)
		return nil
	case StorageRedis:
		b.storeHook = new(redis.Hook)
		err := b.server.AddHook(storageFixes{Hook: b.storeHook, wal: b.wal}, &redis.Options{
			Address:  b.cfg.Storage.Address,
			Password: b.cfg.Storage.Password,
			Database: b.cfg.Storage.DB,
		})
		if err != nil {
			return fmt.Errorf("storage (redis %s): %w", b.cfg.Storage.Address, err)
		}
	default:
		path := b.cfg.BoltPath()
		b.storeHook = new(bolt.Hook)
		err := b.server.AddHook(storageFixes{Hook: b.storeHook, wal: b.wal}, &bolt.Options{
			Path: path,
			// A second idmq on the same file must fail fast instead of waiting on the file lock forever.
			Options: &bbolt.Options{Timeout: 2 * time.Second},
		})
		if err != nil {
			return fmt.Errorf("storage (bolt %s): %w", path, err)
		}
	}
	b.storeOK.Store(true)
	return nil
}

// storageFixes wraps mochi v2.7.9's bolt and redis hooks:
//   - They persist in-flight QoS 1/2 messages without their packet id: after a restart every such message
//     is resent with id 0, which mochi rejects ("missing packet id"), so the whole offline queue is lost.
//     Both hooks end the storage key with ":<packet id>", so the id is recovered from there on load.
//   - Around the store write of a subscriber's new in-flight copy it writes the write-ahead log's queue and
//     queued records (wal.go), so replay knows which subscribers already hold a message.
//   - When a client resumes its session from another connection, mochi moves the in-flight messages to the
//     new connection and then drops them from the old one through OnQosDropped, which deletes their store
//     records: both connections share the client id the records are keyed on. Until the new connection
//     resends them (which stores them again) a kill -9 loses the whole queue; those deletes are skipped.
//   - mochi keeps a QoS 2 delivery stored as PUBLISH after the subscriber's PUBREC (it updates only
//     memory), so after a restart it sends the PUBLISH again to a client that may already have had the
//     PUBREL and released the packet id: a duplicate. The PUBREL state is stored before mochi sends it.
type storageFixes struct {
	mqtt.Hook
	wal *walLog // nil: no write-ahead log
}

func (h storageFixes) Provides(b byte) bool {
	return b == mqtt.OnPacketRead || h.Hook.Provides(b)
}

// Init opens the store, then writes an empty server-info record: mochi reads that record at every start
// and its hooks log a bare ERROR "key not found" on a new store, which alarms people for nothing. The
// record only matters with mochi's RestoreSysInfoOnRestart, which idmq does not set.
func (h storageFixes) Init(config any) error {
	if err := h.Hook.Init(config); err != nil {
		return err
	}
	h.Hook.OnSysInfoTick(&system.Info{})
	return nil
}

func (h storageFixes) StoredInflightMessages() ([]storage.Message, error) {
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

// OnQosPublish brackets the store write of a subscriber's copy of a publish in progress with the log's
// queue and queued records. Resends (DUP) and copies of other messages pass straight through.
func (h storageFixes) OnQosPublish(cl *mqtt.Client, pk packets.Packet, sent int64, resends int) {
	if h.wal == nil || pk.FixedHeader.Type != packets.Publish || pk.FixedHeader.Dup {
		h.Hook.OnQosPublish(cl, pk, sent, resends)
		return
	}
	id, ok := h.wal.inProgressFor(pk)
	if !ok {
		h.Hook.OnQosPublish(cl, pk, sent, resends)
		return
	}
	// If a marker cannot be written the copy is still stored: replay then errs toward delivering again.
	_ = h.wal.appendMarker(walQueue, id, cl.ID, pk.PacketID)
	h.Hook.OnQosPublish(cl, pk, sent, resends)
	_ = h.wal.appendMarker(walQueued, id, cl.ID, pk.PacketID)
}

// OnPacketRead stores the PUBREL state of a QoS 2 delivery when the subscriber's PUBREC arrives, before
// mochi answers with PUBREL: after a restart mochi then resends PUBREL [MQTT-4.3.3-5], not the PUBLISH.
// Only a PUBREC that processPubrec will accept is stored (a known packet id, a success reason code).
func (h storageFixes) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type != packets.Pubrec || pk.ReasonCode >= packets.ErrUnspecifiedError.Code {
		return pk, nil
	}
	if out, ok := cl.State.Inflight.Get(pk.PacketID); ok && out.FixedHeader.Type == packets.Publish {
		rel := packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1},
			PacketID:    pk.PacketID,
			Origin:      out.Origin,
			Created:     out.Created,
		}
		h.Hook.OnQosPublish(cl, rel, rel.Created, 0)
	}
	return pk, nil
}

// OnQosDropped skips the store delete for a connection whose session was taken over: its in-flight
// messages now belong to the new connection, under the same store keys. A clean start takes over too, but
// mochi marks the old connection only after dropping its messages, so those deletes still happen.
func (h storageFixes) OnQosDropped(cl *mqtt.Client, pk packets.Packet) {
	if cl.IsTakenOver() {
		return
	}
	h.Hook.OnQosDropped(cl, pk)
}

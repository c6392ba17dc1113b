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
		err := b.server.AddHook(storageFixes{new(redis.Hook)}, &redis.Options{
			Address:  b.cfg.Storage.Address,
			Password: b.cfg.Storage.Password,
			Database: b.cfg.Storage.DB,
		})
		if err != nil {
			return fmt.Errorf("storage (redis %s): %w", b.cfg.Storage.Address, err)
		}
	default:
		path := b.cfg.BoltPath()
		err := b.server.AddHook(storageFixes{new(bolt.Hook)}, &bolt.Options{
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

// storageFixes wraps mochi v2.7.9's bolt and redis hooks. They persist in-flight QoS 1/2
// messages without their packet id: after a restart every such message is resent with id 0, which mochi
// rejects ("missing packet id"), so the whole offline queue is lost. Both hooks end the storage key with
// ":<packet id>", so the id is recovered from there when messages are loaded.
type storageFixes struct {
	mqtt.Hook
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

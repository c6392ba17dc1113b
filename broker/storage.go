package broker

import (
	"fmt"
	"time"

	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"github.com/mochi-mqtt/server/v2/hooks/storage/redis"
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
		err := b.server.AddHook(new(redis.Hook), &redis.Options{
			Address:  b.cfg.Storage.Address,
			Password: b.cfg.Storage.Password,
			Database: b.cfg.Storage.DB,
		})
		if err != nil {
			return fmt.Errorf("storage (redis %s): %w", b.cfg.Storage.Address, err)
		}
	default:
		path := b.cfg.BoltPath()
		err := b.server.AddHook(new(bolt.Hook), &bolt.Options{
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

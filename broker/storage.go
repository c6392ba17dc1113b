package broker

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"github.com/mochi-mqtt/server/v2/hooks/storage/redis"
	"go.etcd.io/bbolt"

	"github.com/idmq/idmq/mochifix"
)

// walFileName is the write-ahead log's name in data_dir.
const walFileName = "idmq-wal.log"

// addFixes adds hooks, then mochi's workarounds with the configured store and, when the store is
// persistent, the write-ahead log (with the memory store a restart loses everything anyway). A store that
// cannot be opened (corrupt, locked by another process, unreachable) is an error: starting empty would
// silently drop every persisted session.
func (b *Broker) addFixes(hooks []mqtt.Hook) error {
	opts := mochifix.Options{
		Hooks:              hooks,
		SlowSubscriberWait: b.cfg.MQTT.SlowSubscriberWait,
		SkipAuthMethodEcho: b.cfg.MQTT.SkipAuthMethodEcho,
		Logger:             b.log,
		Registerer:         b.registry,
	}
	var what string
	storage := b.cfg.Storage.Type
	if b.cfg.clustered() {
		// JetStream's ack replaces the local store and the write-ahead log: what a client was promised is in
		// the cluster, and a restarted node takes it from there.
		storage = StorageMemory
	}
	switch storage {
	case StorageMemory:
	case StorageRedis:
		what = "redis " + b.cfg.Storage.Address
		opts.Store = new(redis.Hook)
		opts.StoreConfig = &redis.Options{
			Address:  b.cfg.Storage.Address,
			Password: b.cfg.Storage.Password,
			Database: b.cfg.Storage.DB,
		}
	default:
		what = "bolt " + b.cfg.BoltPath()
		opts.Store = new(bolt.Hook)
		opts.StoreConfig = &bolt.Options{
			Path: b.cfg.BoltPath(),
			// A second idmq on the same file must fail fast instead of waiting on the file lock forever.
			Options: &bbolt.Options{Timeout: 2 * time.Second},
		}
	}
	if opts.Store != nil {
		opts.WALPath = filepath.Join(b.cfg.Resolve(b.cfg.DataDir), walFileName)
	}
	fixes, err := mochifix.Add(b.server, opts)
	var storeErr *mochifix.StoreError
	if errors.As(err, &storeErr) {
		return fmt.Errorf("storage (%s): %w", what, storeErr.Err)
	}
	if err != nil {
		return err
	}
	b.fixes = fixes
	if b.cluster != nil {
		fixes.HoldInline(b.cluster.route.RoutingClient()) // other nodes' messages wait for subscribers here
	}
	b.storeOK.Store(true)
	return nil
}

package broker

import (
	"os"
	"path/filepath"

	"github.com/idmq/idmq/authhook"
	"github.com/idmq/idmq/events"
)

// eventsFileName holds the webhooks' undelivered events, in data_dir, next to (not inside) mochi's store:
// mochi's bolt hook keeps its database handle to itself, and bbolt locks a file per open handle.
const eventsFileName = "idmq-events.db"

// newEvents starts the event webhooks when the config has any. Their queues persist in a bolt file when
// the broker's own store is bolt on a single node; with the memory or redis store, or clustered, they are in
// memory only, and a shutdown counts what it loses (idmq_webhook_dropped_total{reason="shutdown"}).
func (b *Broker) newEvents() error {
	if len(b.cfg.Events.Webhooks) == 0 {
		return nil
	}
	var store *events.Store
	if b.cfg.Storage.Type == StorageBolt && !b.cfg.clustered() {
		var err error
		if store, err = events.OpenStore(filepath.Join(b.cfg.Resolve(b.cfg.DataDir), eventsFileName)); err != nil {
			return err
		}
	} else {
		b.log.Warn("events: webhook queues are in memory only: events not yet delivered when idmq stops are lost (counted in idmq_webhook_dropped_total)")
	}
	d, err := events.New(events.Options{Config: b.cfg.Events, Node: b.nodeName(), Store: store, Registerer: b.registry, Logger: b.log})
	if err != nil {
		if store != nil {
			_ = store.Close()
		}
		return err
	}
	b.events = d
	b.eventsHook = events.NewHook(d, b.auth.Identity)
	return nil
}

// nodeName is what events say they come from: the cluster node's name, else the host's.
func (b *Broker) nodeName() string {
	if b.cfg.Cluster != nil {
		return b.cfg.Cluster.Node
	}
	h, _ := os.Hostname()
	return h
}

// onAuthEvent is authhook's callback; b.eventsHook is read when called, as it is built after the auth hook.
func (b *Broker) onAuthEvent(e authhook.AuthEvent) {
	if b.eventsHook != nil {
		b.eventsHook.OnAuthEvent(e)
	}
}

package cluster

import (
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// view is this node's picture of the live nodes, kept from the presence bucket's changes: LiveNodes answers
// without a JetStream round trip, so an admin request does not stall on a bucket whose leader just hung.
type view struct {
	mu       sync.Mutex
	lastSeen map[string]time.Time // node -> when its presence was last renewed, by this node's clock
}

// startView follows the presence bucket until Close.
func (c *Cluster) startView() error {
	w, err := c.b.nodes.WatchAll(c.stop)
	if err != nil {
		return fmt.Errorf("cluster: watching nodes: %w", err)
	}
	c.view.lastSeen = map[string]time.Time{}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer func() { _ = w.Stop() }()
		for {
			select {
			case <-c.stop.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e != nil {
					c.view.seen(e)
				}
			}
		}
	}()
	return nil
}

func (v *view) seen(e jetstream.KeyValueEntry) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if e.Operation() != jetstream.KeyValuePut {
		delete(v.lastSeen, e.Key()) // the node left
		return
	}
	var p presence
	if json.Unmarshal(e.Value(), &p) == nil {
		v.lastSeen[p.Node] = time.Now()
	}
}

// LiveNodes names the nodes whose presence was renewed within PresenceTTL of the latest renewal this node saw,
// sorted. Relative to the latest, not to now: while the bucket's updates stall (its leader being elected
// again), the picture stays as it was instead of emptying.
func (c *Cluster) LiveNodes() []string {
	v := &c.view
	v.mu.Lock()
	defer v.mu.Unlock()
	var latest time.Time
	for _, t := range v.lastSeen {
		if t.After(latest) {
			latest = t
		}
	}
	out := []string{}
	for n, t := range v.lastSeen {
		if latest.Sub(t) <= PresenceTTL {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

// A node is ready while its NATS connection is up and its last heartbeat, a write to the replicated presence
// bucket, was acknowledged less than readyBeats heartbeats ago. An acknowledged write needs the bucket's leader
// and a quorum of its replicas, so a node cut off from the majority (partition, its embedded server down, an
// external NATS unreachable) turns not ready within readyBeats heartbeats (3s by default), or at once when its
// connection drops.
const readyBeats = 3

// health tracks readiness; see Cluster.Ready.
type health struct {
	now      func() time.Time
	up       atomic.Bool  // the NATS connection, as its callbacks report it (no lock of the connection's)
	lastOK   atomic.Int64 // unix nanos of the last acknowledged heartbeat
	inFlight atomic.Bool
	mu       sync.Mutex
	lastErr  error
	wasReady bool
}

func (h *health) init(now func() time.Time) { h.now = now }

// presence is the value of a node's key in the nodes bucket.
type presence struct {
	Node       string    `json:"node"`
	Started    time.Time `json:"started"`
	MetaLeader string    `json:"meta_leader,omitempty"` // as this node's embedded server sees it
}

// Ready reports whether this node is part of a working cluster. The broker answers /readyz from it and refuses
// CONNECTs (0x88 server unavailable) while it is false.
func (c *Cluster) Ready() bool { return c.readyErr() == nil }

// ReadyErr says why the node is not ready, or nil.
func (c *Cluster) ReadyErr() error { return c.readyErr() }

func (c *Cluster) readyErr() error {
	if !c.health.up.Load() {
		return fmt.Errorf("%w: NATS connection lost", ErrNotReady)
	}
	last := time.Unix(0, c.health.lastOK.Load())
	if age := c.health.now().Sub(last); age > readyBeats*c.opts.Heartbeat {
		c.health.mu.Lock()
		cause := c.health.lastErr
		c.health.mu.Unlock()
		if cause == nil {
			cause = errors.New("heartbeat unanswered")
		}
		return fmt.Errorf("%w: no heartbeat acknowledged for %s: %v", ErrNotReady, age.Round(time.Millisecond), cause)
	}
	return nil
}

func (c *Cluster) connChanged(up bool) {
	c.health.up.Store(up)
	if c.running.Load() {
		c.notifyReady()
	}
}

// notifyReady calls OnReadyChange when readiness flipped since the last call.
func (c *Cluster) notifyReady() {
	ready := c.Ready()
	c.health.mu.Lock()
	changed := ready != c.health.wasReady
	c.health.wasReady = ready
	c.health.mu.Unlock()
	if changed {
		if ready {
			c.log.Info("cluster: node ready", "node", c.cfg.Node)
		} else {
			c.log.Warn("cluster: node NOT ready", "node", c.cfg.Node, "err", c.ReadyErr())
		}
		if c.opts.OnReadyChange != nil {
			c.opts.OnReadyChange(ready)
		}
	}
}

// heartbeatLoop renews the presence key every Heartbeat and re-evaluates readiness four times as often, so that
// OnReadyChange follows a lapse closely. A put runs in its own goroutine so that a put stuck for OpTimeout does
// not delay noticing that readiness has lapsed.
func (c *Cluster) heartbeatLoop() {
	defer c.wg.Done()
	const checksPerBeat = 4
	t := time.NewTicker(c.opts.Heartbeat / checksPerBeat)
	defer t.Stop()
	for tick := 0; ; tick++ {
		select {
		case <-c.stop.Done():
			return
		case <-t.C:
		}
		c.notifyReady()
		if tick%checksPerBeat != 0 || !c.health.inFlight.CompareAndSwap(false, true) {
			continue
		}
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			defer c.health.inFlight.Store(false)
			ctx, cancel := context.WithTimeout(c.stop, c.opts.OpTimeout)
			defer cancel()
			if err := c.beat(ctx); err != nil {
				c.log.Debug("cluster: heartbeat failed", "err", err)
			}
			c.notifyReady()
		}()
	}
}

// beat writes this node's presence key and records the outcome.
func (c *Cluster) beat(ctx context.Context) error {
	p := presence{Node: c.cfg.Node, Started: c.started(), MetaLeader: c.embeddedMetaLeader()}
	val, _ := json.Marshal(p)
	ctx, cancel := context.WithTimeout(ctx, c.opts.OpTimeout)
	defer cancel()
	_, err := c.b.nodes.Put(ctx, c.cfg.Node, val)
	c.health.mu.Lock()
	c.health.lastErr = err
	c.health.mu.Unlock()
	if err == nil {
		c.health.lastOK.Store(c.health.now().UnixNano())
	}
	return err
}

func (c *Cluster) started() time.Time {
	c.health.mu.Lock()
	defer c.health.mu.Unlock()
	if c.startedAt.IsZero() {
		c.startedAt = c.health.now().UTC()
	}
	return c.startedAt
}

func (c *Cluster) embeddedMetaLeader() string {
	if c.srv == nil {
		return ""
	}
	jsz, err := c.srv.Jsz(&server.JSzOptions{})
	if err != nil || jsz.Meta == nil {
		return ""
	}
	return jsz.Meta.Leader
}

// listNodes reads the presence bucket. A watcher replays the latest value of every key, then a nil marker;
// keys renewed meanwhile may come twice.
func (c *Cluster) listNodes(ctx context.Context) (Membership, error) {
	var m Membership
	w, err := c.b.nodes.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return m, err
	}
	defer w.Stop()
	seen := map[string]int{}
	for {
		select {
		case e := <-w.Updates():
			if e == nil {
				return m, nil
			}
			var p presence
			if json.Unmarshal(e.Value(), &p) != nil {
				continue
			}
			n := NodeInfo{Name: p.Node, Started: p.Started, LastSeen: e.Created()}
			if i, ok := seen[p.Node]; ok {
				m.Nodes[i] = n
				continue
			}
			seen[p.Node] = len(m.Nodes)
			m.Nodes = append(m.Nodes, n)
			if m.MetaLeader == "" {
				m.MetaLeader = p.MetaLeader
			}
		case <-ctx.Done():
			return m, ctx.Err()
		}
	}
}

// NodeInfo is one live node.
type NodeInfo struct {
	Name     string    `json:"name"`
	Started  time.Time `json:"started"`
	LastSeen time.Time `json:"last_seen"` // when its last heartbeat was stored (NATS server clock)
}

// Membership is the cluster as this node sees it.
type Membership struct {
	Nodes        []NodeInfo `json:"nodes"`         // live nodes (a heartbeat within PresenceTTL), by name
	MetaLeader   string     `json:"meta_leader"`   // JetStream meta leader (server name); "" if unknown
	StreamLeader string     `json:"stream_leader"` // leader of the message stream (server name)
}

// Nodes lists the live nodes and the JetStream leaders. With an external NATS the meta leader is unknown (it is
// visible only to NATS' system account) unless reported by an embedded node.
func (c *Cluster) Nodes(ctx context.Context) (Membership, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*c.opts.OpTimeout)
	defer cancel()
	// A listing started while the bucket's leader moves can hang: short tries, as in provisioning.
	m, err := retry(ctx, c.opts.OpTimeout, c.listNodes)
	if err != nil {
		return m, fmt.Errorf("cluster: listing nodes: %w", err)
	}
	if ml := c.embeddedMetaLeader(); ml != "" {
		m.MetaLeader = ml
	}
	slices.SortFunc(m.Nodes, func(a, b NodeInfo) int { return strings.Compare(a.Name, b.Name) })
	info, err := c.b.stream.Info(ctx)
	if err != nil {
		return m, fmt.Errorf("cluster: reading the stream's leader: %w", err)
	}
	if info.Cluster != nil {
		m.StreamLeader = info.Cluster.Leader
	}
	return m, nil
}

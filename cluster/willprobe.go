package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// A node that looks lost to the orphan watch (no renewal of its presence seen for PresenceTTL) is confirmed
// lost by reading its presence key before any of its Wills' delays start: one read per node, not per Will.

type probeResult struct {
	node    string
	found   bool
	started time.Time
	failed  bool // the read failed: ask again at a later check
}

// probe reads node's presence key unless a read is on its way; the loop gets the answer (probeDone).
func (w *wills) probe(node string) {
	if w.probing[node] {
		return
	}
	w.probing[node] = true
	w.pending.Add(1)
	go func() {
		defer w.pending.Done()
		ctx, cancel := context.WithTimeout(w.ctx, w.c.opts.OpTimeout)
		defer cancel()
		found, started, err := w.probeNode(ctx, node)
		select {
		case w.probed <- probeResult{node: node, found: found, started: started, failed: err != nil}:
		case <-w.ctx.Done():
		}
	}()
}

// probeDone takes a read's answer: a key still there renews the node in this node's view (and tells a restart
// by its start), a key gone marks the node lost from now.
func (w *wills) probeDone(r probeResult, now time.Time) {
	delete(w.probing, r.node)
	switch {
	case r.failed:
	case r.found:
		w.lastSeen[r.node] = now
		if r.started.After(w.started[r.node]) {
			w.started[r.node] = r.started
		}
		delete(w.lostAt, r.node)
	default:
		if _, ok := w.lostAt[r.node]; !ok {
			w.lostAt[r.node] = now
		}
	}
}

// readPresence reads node's key in the presence bucket.
func (c *Cluster) readPresence(ctx context.Context, node string) (bool, time.Time, error) {
	e, err := c.b.nodes.Get(ctx, node)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, time.Time{}, nil
	}
	if err != nil {
		return false, time.Time{}, err
	}
	var p presence
	_ = json.Unmarshal(e.Value(), &p) // unreadable: present all the same
	return true, p.Started, nil
}

package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The orphan watch of wills (wills.go): one goroutine follows the presence and wills buckets, decides which
// records lost their node and when their Will is due, and starts each publication.

// start follows the presence and wills buckets (their current values, then changes) until stop.
func (w *wills) start() error {
	ctx, cancel := context.WithCancel(context.Background())
	nw, err := w.c.b.nodes.WatchAll(ctx)
	if err != nil {
		cancel()
		return fmt.Errorf("cluster: watching nodes: %w", err)
	}
	ww, err := w.c.b.wills.WatchAll(ctx)
	if err != nil {
		_ = nw.Stop()
		cancel()
		return fmt.Errorf("cluster: watching Wills: %w", err)
	}
	w.ctx, w.cancel, w.done = ctx, cancel, make(chan struct{})
	go w.loop(nw, ww)
	return nil
}

// stop ends the loop and deletes this node's records: a node shutting down ends its clients' connections
// without their Wills, as one node does, so no other node may publish them.
func (w *wills) stop() {
	w.stopOnce.Do(func() {
		if w.cancel == nil {
			return
		}
		w.cancel()
		<-w.done
		w.mu.Lock()
		w.closed = true
		w.mu.Unlock()
		w.pending.Wait()
		w.mu.Lock()
		left := make([]ownWill, 0, len(w.mine))
		for _, own := range w.mine {
			left = append(left, own)
		}
		clear(w.mine)
		w.mu.Unlock()
		// One bound for all: a node that lost NATS must not take OpTimeout per client to shut down.
		ctx, cancel := context.WithTimeout(context.Background(), w.c.opts.OpTimeout)
		defer cancel()
		failed := 0
		var last error
		for _, own := range left {
			if err := w.drop(ctx, own); err != nil {
				failed, last = failed+1, err
			}
		}
		if failed > 0 {
			w.c.log.Warn("cluster: Will records left at close: other nodes may publish these Wills", "records", failed, "err", last)
		}
	})
}

func (w *wills) loop(nw, ww jetstream.KeyWatcher) {
	defer close(w.done)
	defer func() { _ = nw.Stop(); _ = ww.Stop() }()
	t := time.NewTicker(w.c.opts.Heartbeat)
	defer t.Stop()
	purge := time.NewTicker(markerPurgeEvery)
	defer purge.Stop()
	ready := true
	for {
		select {
		case <-w.ctx.Done():
			return
		case e := <-nw.Updates():
			if e != nil {
				w.presenceChanged(e)
			}
		case e := <-ww.Updates():
			if e != nil {
				w.recordChanged(e)
			}
		case r := <-w.fired:
			w.afterFire(r)
		case r := <-w.probed:
			w.probeDone(r, time.Now())
		case <-purge.C:
			w.pending.Add(1)
			go func() {
				defer w.pending.Done()
				w.purgeMarkers(markerPurgeEvery)
			}()
		case <-t.C:
			now := time.Now()
			if !w.c.Ready() {
				ready = false
				continue
			}
			if !ready {
				// Cut off, this node saw no heartbeats: its view of the others is stale, start afresh.
				ready = true
				for n := range w.lastSeen {
					w.lastSeen[n] = now
				}
				clear(w.lostAt)
			}
			w.check(now)
		}
	}
}

// markerPurgeEvery: every connection with a Will leaves a delete marker under its own key; markers older than
// this are removed this often, or the bucket would grow with every connection ever made.
const markerPurgeEvery = 10 * time.Minute

// purgeMarkers removes the delete markers older than olderThan (negative: all).
func (w *wills) purgeMarkers(olderThan time.Duration) {
	ctx, cancel := context.WithTimeout(w.ctx, time.Minute)
	defer cancel()
	if err := w.c.b.wills.PurgeDeletes(ctx, jetstream.DeleteMarkersOlderThan(olderThan)); err != nil {
		w.c.log.Debug("cluster: purging old Will delete markers", "err", err)
	}
}

func (w *wills) presenceChanged(e jetstream.KeyValueEntry) {
	now := time.Now()
	if e.Operation() != jetstream.KeyValuePut {
		w.lastSeen[e.Key()] = now.Add(-PresenceTTL - w.c.opts.Heartbeat) // left: lost at once
		w.lostAt[e.Key()] = now
		return
	}
	var p presence
	if json.Unmarshal(e.Value(), &p) != nil {
		return
	}
	w.lastSeen[p.Node] = now
	w.started[p.Node] = p.Started
	delete(w.lostAt, p.Node)
}

func (w *wills) recordChanged(e jetstream.KeyValueEntry) {
	if e.Operation() != jetstream.KeyValuePut {
		delete(w.known, e.Key())
		return
	}
	var rec willRecord
	if json.Unmarshal(e.Value(), &rec) != nil {
		return
	}
	w.known[e.Key()] = &knownWill{rev: e.Revision(), rec: rec}
}

// check starts the publication of every orphan whose delay has passed.
func (w *wills) check(now time.Time) {
	for key, k := range w.known {
		if k.firing {
			continue
		}
		// Asked on every tick: a node that looked lost (its heartbeats late on a busy machine) and then renewed
		// its presence must start the delay afresh if it dies later, or its Will would come early.
		since, orphan := w.lostSince(k.rec, now)
		if !orphan {
			k.since = time.Time{}
			continue
		}
		if k.since.IsZero() {
			k.since = since
		}
		if now.Before(k.since.Add(time.Duration(k.rec.Delay) * time.Second)) {
			continue
		}
		k.firing = true
		st, ok := w.started[k.rec.Node]
		restarted := ok && st.After(k.rec.NodeStarted)
		w.pending.Add(1)
		go func(k knownWill) {
			defer w.pending.Done()
			r := fireResult{key: key, outcome: w.fire(key, k, restarted)}
			select {
			case w.fired <- r:
			case <-w.ctx.Done():
			}
		}(*k)
	}
}

// lostSince tells whether rec's node is lost and since when: it restarted since it wrote rec (this node
// included), or a read of its presence key found it gone. Silence in this node's view of the bucket (no
// renewal seen for PresenceTTL) only starts that read: the view lags when the watch stalls or heartbeats run
// late, and a delay counted from it could end before the node died. Counted from the read, a Will never
// comes early [MQTT-3.1.3-9]; it comes up to PresenceTTL late instead.
func (w *wills) lostSince(rec willRecord, now time.Time) (time.Time, bool) {
	if st, ok := w.started[rec.Node]; ok && st.After(rec.NodeStarted) {
		return st, true
	}
	if rec.Node == w.c.cfg.Node {
		return time.Time{}, false
	}
	if at, ok := w.lostAt[rec.Node]; ok {
		return at, true
	}
	last, ok := w.lastSeen[rec.Node]
	if !ok {
		w.lastSeen[rec.Node] = now // never seen: counted from now
		return time.Time{}, false
	}
	if now.Sub(last) > PresenceTTL+w.c.opts.Heartbeat {
		w.probe(rec.Node)
	}
	return time.Time{}, false
}

func (w *wills) afterFire(r fireResult) {
	k, ok := w.known[r.key]
	if !ok {
		return
	}
	k.firing = false
	if r.outcome == fireAlive {
		k.since = time.Time{}
		w.lastSeen[k.rec.Node] = time.Now()
		delete(w.lostAt, k.rec.Node)
	}
}

// fire publishes an orphan's Will unless its client connected again to continue its session; the node whose
// revision-checked delete succeeds is the one that acts, so a Will is published once.
func (w *wills) fire(key string, k knownWill, restarted bool) fireOutcome {
	ctx, cancel := context.WithTimeout(w.ctx, w.c.opts.OpTimeout)
	defer cancel()
	rec := k.rec
	if !restarted {
		// Confirm with the bucket itself, not this node's view of it.
		e, err := w.c.b.nodes.Get(ctx, rec.Node)
		switch {
		case err == nil:
			var p presence
			if json.Unmarshal(e.Value(), &p) == nil && !p.Started.After(rec.NodeStarted) {
				return fireAlive
			}
		case !errors.Is(err, jetstream.ErrKeyNotFound):
			return fireRetry
		}
	}
	send := true
	e, err := w.c.b.owners.Get(ctx, ClientKey(rec.Client))
	switch {
	case err == nil:
		var cur ownerRecord
		if json.Unmarshal(e.Value(), &cur) == nil && cur.Conn != rec.Conn {
			send = cur.Clean // [MQTT-3.1.3-9]: a new connection to the session cancels it; a clean start ends the session
		}
	case !errors.Is(err, jetstream.ErrKeyNotFound): // not found: the session ended since
		return fireRetry
	}
	if err := w.c.b.wills.Delete(ctx, key, jetstream.LastRevision(k.rev)); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) || isWrongSequence(err) {
			return fireDone // another node acted
		}
		return fireRetry
	}
	if !send {
		w.c.log.Info("cluster: Will of a lost node's client cancelled: it continued its session", "client", rec.Client, "node", rec.Node)
		return fireDone
	}
	m, err := decodeEnvelope(rec.Will)
	if err != nil {
		w.c.log.Warn("cluster: unreadable Will record", "client", rec.Client, "err", err)
		return fireDone
	}
	w.c.log.Info("cluster: publishing the Will of a lost node's client", "client", rec.Client, "node", rec.Node, "topic", m.Topic)
	w.publish(rec.Client, m)
	return fireDone
}

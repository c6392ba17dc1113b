package cluster

import (
	"context"
	"fmt"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/nats-io/nats.go/jetstream"
)

// retainedSync keeps mochi's retained messages equal to the idmq-retained bucket. Every node writes its clients'
// retained publishes to the bucket and applies every value of the bucket, its own included, in the bucket's
// order, so concurrent publishes on two nodes converge to the bucket's last value everywhere. One race is left
// to close: mochi stores a local retained publish itself, after the hook's put; if another node's value for the
// topic overtook that put in the bucket and was already applied, afterLocal puts it back.
type retainedSync struct {
	c      *Cluster
	server *mqtt.Server

	mu     sync.Mutex
	latest map[string]appliedRetained // topic -> the bucket's value last applied
	own    map[string]uint64          // topic -> revision of this node's put, until mochi stored it

	cancel context.CancelFunc
	done   chan struct{}
}

type appliedRetained struct {
	rev uint64
	pk  packets.Packet
}

func newRetainedSync(c *Cluster, server *mqtt.Server) *retainedSync {
	return &retainedSync{c: c, server: server, latest: map[string]appliedRetained{}, own: map[string]uint64{}}
}

// put stores a retained publish (an empty payload clears the topic) in the bucket, bounded by OpTimeout.
func (r *retainedSync) put(m *Message) error {
	v := *m
	v.Origin, v.DedupID = r.c.cfg.Node, ""
	if v.Created.IsZero() {
		v.Created = r.c.opts.Now()
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.c.opts.OpTimeout)
	defer cancel()
	rev, err := r.c.b.retained.Put(ctx, RetainedKey(m.Topic), v.encode(nil))
	if err != nil {
		return fmt.Errorf("cluster: storing the retained message of %q: %w", m.Topic, err)
	}
	r.mu.Lock()
	r.own[m.Topic] = rev
	r.mu.Unlock()
	return nil
}

// start loads the bucket into mochi and follows it; it returns when the values present at start are applied.
func (r *retainedSync) start(ctx context.Context) error {
	watchCtx, cancel := context.WithCancel(context.Background())
	done, err := loadBucket(ctx, watchCtx, r.c.b.retained, r.c.opts.OpTimeout, r.c.log.Warn, r.apply)
	if err != nil {
		cancel()
		if done != nil {
			<-done
		}
		return fmt.Errorf("cluster: loading retained messages: %w", err)
	}
	r.cancel, r.done = cancel, done
	return nil
}

func (r *retainedSync) stop() {
	if r.cancel != nil {
		r.cancel()
		<-r.done
	}
}

func (r *retainedSync) apply(e jetstream.KeyValueEntry) {
	// Only puts arrive: idmq clears a topic with an empty payload; a delete by hand has no topic to clear.
	m, err := decodeEnvelope(e.Value())
	if err != nil {
		r.c.log.Warn("cluster: skipping an unreadable retained message", "key", e.Key(), "err", err)
		return
	}
	pk, ok := packetOf(&m, r.c.opts.Now())
	if !ok {
		pk.Payload = nil // expired: clear it here too
	}
	pk.FixedHeader.Retain = true
	pk.Origin = m.ClientID
	r.mu.Lock()
	defer r.mu.Unlock()
	r.latest[m.Topic] = appliedRetained{rev: e.Revision(), pk: pk}
	r.server.Topics.RetainMessage(pk)
}

// afterLocal runs after mochi stored a retained publish of a local client on topic.
func (r *retainedSync) afterLocal(topic string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	own, put := r.own[topic]
	delete(r.own, topic)
	if l, ok := r.latest[topic]; ok && put && l.rev > own {
		r.server.Topics.RetainMessage(l.pk)
	}
}

// afterRouted runs after mochi stored a routed retained message (deliver keeps the flag for Retain As
// Published subscribers): the stream may deliver it after the bucket moved on, so the bucket's value is put
// back. Without one applied yet, the routed copy stands until the bucket's value arrives.
func (r *retainedSync) afterRouted(topic string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if l, ok := r.latest[topic]; ok {
		r.server.Topics.RetainMessage(l.pk)
	}
}

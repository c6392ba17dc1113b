package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Nodes answer each other's administrative requests (list your clients, disconnect this one) over plain NATS
// request/reply, outside JetStream: the answer is about now, nothing to keep. A node answers on
// AdminSubject(node, name). Anyone who can publish on the NATS cluster can ask, as they could write to the
// stream and buckets: the NATS client port is the cluster's trust boundary (see doc.go).
const adminPrefix = "idmq.admin."

// AdminTimeout bounds one node's answer: an admin request must not hang on a node that died.
const AdminTimeout = 2 * time.Second

// ErrNoAnswer: the node did not answer within AdminTimeout (gone, or not serving requests of that name).
var ErrNoAnswer = errors.New("cluster: node did not answer")

// AdminSubject is the subject on which node answers requests named name.
func AdminSubject(node, name string) string { return adminPrefix + node + "." + name }

// HandleRequests answers the requests named name addressed to this node with fn, called from one goroutine,
// until stop.
func (c *Cluster) HandleRequests(name string, fn func(req []byte) []byte) (stop func(), err error) {
	sub, err := c.nc.Subscribe(AdminSubject(c.cfg.Node, name), func(m *nats.Msg) {
		_ = m.Respond(fn(m.Data))
	})
	if err == nil {
		err = c.nc.FlushTimeout(c.opts.OpTimeout) // the server has the subscription: requests from now on reach it
	}
	if err != nil {
		if sub != nil {
			_ = sub.Unsubscribe()
		}
		return nil, fmt.Errorf("cluster: answering %s requests: %w", name, err)
	}
	return func() { _ = sub.Unsubscribe() }, nil
}

// Ask sends the request named name to node and returns its answer, within AdminTimeout (less if ctx ends
// first). A node that is gone or does not answer gives ErrNoAnswer.
func (c *Cluster) Ask(ctx context.Context, node, name string, req []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, AdminTimeout)
	defer cancel()
	m, err := c.nc.RequestWithContext(ctx, AdminSubject(node, name), req)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) {
			return nil, fmt.Errorf("%w: %s (%s)", ErrNoAnswer, node, err)
		}
		return nil, fmt.Errorf("cluster: asking %s: %w", node, err)
	}
	return m.Data, nil
}

// AskAll sends the request to every live node (LiveNodes), this one included, in parallel, and returns the
// answers by node and, sorted, the live nodes that did not answer within AdminTimeout.
func (c *Cluster) AskAll(ctx context.Context, name string, req []byte) (answers map[string][]byte, unanswered []string) {
	answers = map[string][]byte{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range c.LiveNodes() {
		wg.Go(func() {
			a, err := c.Ask(ctx, n, name, req)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				unanswered = append(unanswered, n)
				return
			}
			answers[n] = a
		})
	}
	wg.Wait()
	slices.Sort(unanswered)
	return answers, unanswered
}

// OwnerOf names the node that holds client id's connection or last held its session; "" if no node claims it.
func (c *Cluster) OwnerOf(ctx context.Context, id string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.OpTimeout)
	defer cancel()
	e, err := c.b.owners.Get(ctx, ClientKey(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("cluster: reading the owner of client %q: %w", id, err)
	}
	var rec ownerRecord
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return "", fmt.Errorf("cluster: owner of client %q: %w", id, err)
	}
	return rec.Node, nil
}

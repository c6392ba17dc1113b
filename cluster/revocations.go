package cluster

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// PutRevocation stores a credential revocation in the idmq-revocations bucket, where every node finds it
// (WatchRevocations), now and after restarts. name identifies what is revoked (a later revocation of the same
// name replaces the earlier); value is the broker's encoding, opaque here.
func (c *Cluster) PutRevocation(ctx context.Context, name string, value []byte) error {
	ctx, cancel := context.WithTimeout(ctx, c.opts.OpTimeout)
	defer cancel()
	if _, err := c.b.revocations.Put(ctx, ClientKey(name), value); err != nil {
		return fmt.Errorf("cluster: storing revocation: %w", err)
	}
	return nil
}

// WatchRevocations calls fn, from one goroutine, with every revocation in the bucket: those stored before it was
// called before it returns (ctx bounds that wait), then each new one as it is stored, until stop.
func (c *Cluster) WatchRevocations(ctx context.Context, fn func(value []byte)) (stop func(), err error) {
	watchCtx, cancel := context.WithCancel(context.Background())
	done, err := loadBucket(ctx, watchCtx, c.b.revocations, c.opts.OpTimeout, c.log.Warn, func(e jetstream.KeyValueEntry) { fn(e.Value()) })
	if err != nil {
		cancel()
		if done != nil {
			<-done
		}
		return nil, fmt.Errorf("cluster: loading revocations: %w", err)
	}
	return func() { cancel(); <-done }, nil
}

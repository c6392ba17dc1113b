package cluster

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// loadBucket replays every current value of kv through apply and follows later changes from one goroutine until
// ctx ends; it returns once the values present now have been applied. The watcher's end-of-replay marker alone
// is not enough: on a node just restarted, the watch may be served from a replica still catching up, which
// announces the end of a replay that lacks the newest values. So loadBucket also waits until it has seen the
// bucket's last revision as the stream's leader reports it. done is closed when the goroutine ends.
//
// The catch-up wait is bounded by catchUp: a last revision the watch never delivers (a message removed behind a
// key's latest) must not stop the node from starting; what is missing then arrives as the replica catches up.
func loadBucket(ctx, watchCtx context.Context, kv jetstream.KeyValue, catchUp time.Duration, log func(msg string, args ...any),
	apply func(jetstream.KeyValueEntry)) (done chan struct{}, err error) {
	w, err := kv.WatchAll(watchCtx)
	if err != nil {
		return nil, fmt.Errorf("cluster: watching bucket %s: %w", kv.Bucket(), err)
	}
	var seen atomic.Uint64
	done, replayed := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		defer func() { _ = w.Stop() }()
		first := true
		for e := range w.Updates() {
			if e == nil {
				if first {
					first = false
					close(replayed)
				}
				continue
			}
			if e.Operation() == jetstream.KeyValuePut {
				apply(e)
			}
			seen.Store(max(seen.Load(), e.Revision()))
		}
	}()
	select {
	case <-replayed:
	case <-ctx.Done():
		return done, fmt.Errorf("cluster: loading bucket %s: %w", kv.Bucket(), ctx.Err())
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return done, fmt.Errorf("cluster: reading bucket %s: %w", kv.Bucket(), err)
	}
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok {
		return done, nil
	}
	last := bs.StreamInfo().State.LastSeq
	deadline := time.Now().Add(catchUp)
	for seen.Load() < last {
		if time.Now().After(deadline) {
			log("cluster: bucket not caught up at start; continuing", "bucket", kv.Bucket(), "revision", last, "seen", seen.Load())
			return done, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return done, nil
}

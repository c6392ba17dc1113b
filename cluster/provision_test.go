package cluster

import (
	"context"
	"sync"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// TestProvisionIdempotent: three nodes provision concurrently at start and again later; the stream and buckets
// exist once, with replicas 3, and keep their data; a node restarted later finds them.
func TestProvisionIdempotent(t *testing.T) {
	nodes, cfgs := startCluster(t, 3)
	ctx := context.Background()
	if _, err := nodes[0].Publish(ctx, &Message{Topic: "kept", Payload: []byte("1")}); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	errs := make([]error, len(nodes))
	for i, n := range nodes {
		wg.Go(func() { _, errs[i] = n.provision(ctx) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("provisioning again on %s: %v", cfgs[i].Node, err)
		}
	}

	info, err := nodes[1].b.stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Replicas != 3 || info.Config.MaxAge != DefaultRetention || info.State.Msgs != 1 {
		t.Fatalf("stream: replicas %d, max age %s, %d msgs; want 3, %s, 1",
			info.Config.Replicas, info.Config.MaxAge, info.State.Msgs, DefaultRetention)
	}
	names := nodes[2].js.StreamNames(ctx)
	count := map[string]int{}
	for n := range names.Name() {
		count[n]++
	}
	wants := []string{StreamName}
	for _, b := range nodes[2].bucketConfigs() {
		wants = append(wants, "KV_"+b.Bucket)
	}
	for _, want := range wants {
		if count[want] != 1 {
			t.Errorf("stream %s exists %d times, want once (all: %v)", want, count[want], count)
		}
	}
	if len(count) != len(wants) {
		t.Errorf("streams %v, want exactly the stream and buckets of doc.go", count)
	}
	for _, kv := range []jetstream.KeyValue{nodes[0].b.retained, nodes[0].b.sessions, nodes[0].b.nodes} {
		st, err := kv.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config.Replicas != 3 {
			t.Errorf("bucket %s is not replicated 3 times", st.Bucket())
		}
	}

	// A node restarted later (same name, same store) finds everything, the message included.
	if err := nodes[2].Close(); err != nil {
		t.Fatal(err)
	}
	again := startNodes(t, cfgs[2:3])[0]
	info, err = again.b.stream.Info(ctx)
	if err != nil || info.State.Msgs != 1 {
		t.Fatalf("after restart: %v, %+v", err, info)
	}
}

package e2e

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/idmq/idmq/internal/testkit"
)

// TestClusterSlowSubscriberGetsEveryRoutedMessage: publishers on one node acknowledged 2,000 QoS 1 messages far
// faster than a subscriber on another node takes them (1 ms each, a window of 32). Nothing upstream waits for
// that subscriber, so the receiving node must: every message arrives, none is counted dropped. Before, the node
// handed the burst to mochi at once and mochi dropped what exceeded the window ("client store quota reached").
func TestClusterSlowSubscriberGetsEveryRoutedMessage(t *testing.T) {
	const total, publishers = 2000, 16
	nodes := newIdmqClusterWith(t, "mqtt: {max_inflight: 32}\n")
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Go(n.start)
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	var mu sync.Mutex
	got := map[string]int{}
	conn := dialV5(t, nodes[1], "tcp", nil)
	sub := paho.NewClient(paho.ClientConfig{Conn: conn, OnClientError: func(error) {}, AuthHandler: testkit.NoAuthExchange{},
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			time.Sleep(time.Millisecond) // its PUBACK follows: paho acknowledges once the handler returns
			mu.Lock()
			got[string(pr.Packet.Payload)]++
			mu.Unlock()
			return true, nil
		}}})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if _, err := sub.Connect(ctx, &paho.Connect{ClientID: "slow-reader", CleanStart: true, KeepAlive: 30,
		Username: "alice", UsernameFlag: true, Password: []byte(nodes[1].token("alice")), PasswordFlag: true}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Disconnect(&paho.Disconnect{}) })
	if _, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "users/alice/burst", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	// A subscription on one node reaches the others through the cluster: wait until a probe crosses.
	pub := clusterClient(t, nodes[0], "burster")
	testkit.Eventually(t, 20*time.Second, func() bool {
		_, _ = pub.Publish(ctx, &paho.Publish{Topic: "users/alice/burst", QoS: 1, Payload: []byte("probe")})
		mu.Lock()
		defer mu.Unlock()
		return got["probe"] > 0
	}, "a probe routed from node 0 to the subscriber on node 1")

	start := time.Now()
	var pwg sync.WaitGroup
	for p := range publishers {
		pwg.Go(func() {
			for i := p; i < total; i += publishers {
				pctx, pcancel := context.WithTimeout(context.Background(), 30*time.Second)
				_, err := pub.Publish(pctx, &paho.Publish{Topic: "users/alice/burst", QoS: 1, Payload: []byte(strconv.Itoa(i))})
				pcancel()
				if err != nil {
					t.Errorf("publish %d: %v", i, err)
					return
				}
			}
		})
	}
	pwg.Wait()
	acked := time.Since(start)
	complete := func() bool {
		mu.Lock()
		defer mu.Unlock()
		for i := range total {
			if got[strconv.Itoa(i)] == 0 {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(60 * time.Second)
	for !complete() && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	mu.Lock()
	missing := 0
	for i := range total {
		if got[strconv.Itoa(i)] == 0 {
			missing++
		}
	}
	mu.Unlock()
	dropped, _ := nodes[1].metric("idmq_inflight_dropped_total")
	t.Logf("%d messages acknowledged in %s, all delivered in %s; subscriber's node: inflight dropped %s", total, acked, time.Since(start), dropped)
	if missing > 0 {
		t.Fatalf("%d of %d acknowledged QoS 1 messages never reached the subscriber on another node (inflight dropped %s)", missing, total, dropped)
	}
}

package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/idmq/idmq/internal/testkit"
)

// sharedTally records which member received each payload.
type sharedTally struct {
	mu  sync.Mutex
	got map[string][]string // payload -> members, in arrival order
	per map[string]int      // member -> messages
}

func newSharedTally() *sharedTally {
	return &sharedTally{got: map[string][]string{}, per: map[string]int{}}
}

func (y *sharedTally) add(member string, payload []byte) {
	y.mu.Lock()
	y.got[string(payload)] = append(y.got[string(payload)], member)
	y.per[member]++
	y.mu.Unlock()
}

func (y *sharedTally) perMember(name string) int {
	y.mu.Lock()
	defer y.mu.Unlock()
	return y.per[name]
}

func (y *sharedTally) distinct() int {
	y.mu.Lock()
	defer y.mu.Unlock()
	return len(y.got)
}

// collect records what c receives under name until the test ends.
func (y *sharedTally) collect(t *testing.T, name string, c *testkit.V5Client) {
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	go func() {
		for {
			select {
			case pb := <-c.Received:
				y.add(name, pb.Payload)
			case <-done:
				return
			}
		}
	}()
}

// TestClusterSharedSubscriptionBalanced: six members of one shared group, two on each of three nodes, receive
// 30,000 QoS 1 messages published on all three nodes: each message exactly once, and each node's members
// within ±10% of a third.
func TestClusterSharedSubscriptionBalanced(t *testing.T) {
	nodes := startIdmqCluster(t)
	const filter = "$share/workers/users/alice/jobs/#"
	y := newSharedTally()
	nodeOf := map[string]int{}
	for i, n := range nodes {
		for j := range 2 {
			name := fmt.Sprintf("worker-%d-%d", i, j)
			c := clusterClient(t, n, name)
			subscribe(t, c, filter, 1)
			y.collect(t, name, c)
			nodeOf[name] = i
		}
	}

	const perNode, total = 10_000, 30_000
	start := time.Now()
	var wg sync.WaitGroup
	for i, n := range nodes {
		pub := clusterClient(t, n, fmt.Sprintf("producer-%d", i))
		for w := range 8 { // a few QoS 1 publishes in flight per producer
			wg.Go(func() {
				for k := w; k < perNode; k += 8 {
					_, err := pub.Publish(context.Background(), &paho.Publish{Topic: fmt.Sprintf("users/alice/jobs/%d", k%7),
						QoS: 1, Payload: fmt.Appendf(nil, "%d-%d", i, k)})
					if err != nil {
						t.Errorf("producer %d: %v", i, err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	deadline := time.Now().Add(60 * time.Second)
	for y.distinct() < total && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // duplicates would arrive meanwhile
	t.Logf("%d messages through the group in %s", total, time.Since(start).Round(time.Millisecond))

	y.mu.Lock()
	defer y.mu.Unlock()
	if len(y.got) != total {
		t.Fatalf("the group received %d distinct messages of %d", len(y.got), total)
	}
	dups := 0
	for p, by := range y.got {
		if len(by) != 1 {
			if dups++; dups <= 5 {
				t.Errorf("message %s delivered %d times: %v", p, len(by), by)
			}
		}
	}
	if dups > 0 {
		t.Fatalf("%d messages delivered more than once", dups)
	}
	perNodeGot := make([]int, len(nodes))
	for name, n := range y.per {
		perNodeGot[nodeOf[name]] += n
	}
	t.Logf("per node %v, per member %v", perNodeGot, y.per)
	for i, n := range perNodeGot {
		if n < total/3*9/10 || n > total/3*11/10 {
			t.Errorf("node %d's members received %d of %d, outside ±10%% of a third", i, n, total)
		}
	}
}

// TestClusterSharedMemberDiesUnacknowledged: a member that received QoS 1 messages and dies without
// acknowledging them (its connection dropped) has them delivered to the group's member on another node at
// once; none is lost.
func TestClusterSharedMemberDiesUnacknowledged(t *testing.T) {
	nodes := startIdmqCluster(t)
	a, b := nodes[0], nodes[1]
	const filter = "$share/g/users/alice/work"
	y := newSharedTally()

	// The dying member acknowledges nothing: paho's manual acknowledgement, never given.
	conn := dialV5(t, a, "tcp", nil)
	holder := paho.NewClient(paho.ClientConfig{
		Conn:                       conn,
		EnableManualAcknowledgment: true,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			y.add("holder", pr.Packet.Payload)
			return true, nil
		}},
		OnClientError: func(error) {},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := holder.Connect(ctx, &paho.Connect{ClientID: "holder", CleanStart: true, KeepAlive: 30,
		Username: "alice", UsernameFlag: true, Password: []byte(a.token("alice")), PasswordFlag: true}); err != nil {
		t.Fatal(err)
	}
	sub := &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}}
	if _, err := holder.Subscribe(ctx, sub); err != nil {
		t.Fatal(err)
	}
	other := clusterClient(t, b, "other")
	subscribe(t, other, filter, 1)
	y.collect(t, "other", other)

	pub := clusterClient(t, nodes[2], "producer")
	// At least 200, and on until the holder has some: a member's first pull may be retried while the group's
	// new consumer gets its leader.
	n := 0
	for ; n < 200 || y.perMember("holder") == 0; n++ {
		if n == 5000 {
			t.Fatal("5000 messages published and none reached the holder")
		}
		if _, err := pub.Publish(context.Background(), &paho.Publish{Topic: "users/alice/work", QoS: 1,
			Payload: fmt.Appendf(nil, "%d", n)}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for y.distinct() < n && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	y.mu.Lock()
	held := y.per["holder"]
	y.mu.Unlock()
	if held == 0 || y.distinct() != n {
		t.Fatalf("before the drop: holder %d, distinct %d of %d; want some at the holder, all once", held, y.distinct(), n)
	}
	_ = conn.Close() // the member dies, its messages unacknowledged
	dropped := time.Now()
	for {
		y.mu.Lock()
		atOther := y.per["other"]
		y.mu.Unlock()
		if atOther >= n {
			break
		}
		if time.Since(dropped) > 10*time.Second { // well under the 30 s JetStream ack wait
			t.Fatalf("10s after the holder died the other member has %d of %d messages (holder had %d)", atOther, n, held)
		}
		time.Sleep(100 * time.Millisecond)
	}
	y.mu.Lock()
	defer y.mu.Unlock()
	for k := range n {
		by := y.got[fmt.Sprint(k)]
		if got := len(by) - countOf(by, "holder"); got != 1 {
			t.Fatalf("message %d reached the other member %d times (%v)", k, got, by)
		}
	}
	t.Logf("holder had %d unacknowledged; all %d at the other member %s after the drop",
		held, n, time.Since(dropped).Round(time.Millisecond))
}

func countOf(xs []string, x string) int {
	n := 0
	for _, v := range xs {
		if v == x {
			n++
		}
	}
	return n
}

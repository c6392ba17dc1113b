package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/idmq/idmq/internal/testkit"
)

const clusterAdminKey = "cluster-admin-key-0123456789abcdef"

// clusterNodeBase is what every clustered test node shares, up to its cluster.nats settings; %s are the shared
// signing key and the node name.
const clusterNodeBase = `
data_dir: ./data
listeners:
  - {type: tcp, address: "127.0.0.1:{{tcp}}"}
http: {address: "127.0.0.1:{{http}}", admin_keys: ["` + clusterAdminKey + `"]}
auth:
  signing_key_file: %s
  providers:
    - {name: local, type: local}
acl:
  rules:
    - {topic: "users/%%u/#", access: pubsub}
cluster:
  node: %s
  nats:
`

// clusterNodeConfig is one node of a three-node cluster on loopback; after clusterNodeBase's, %s are this
// node's route address and the other nodes' route URLs.
const clusterNodeConfig = clusterNodeBase + `    listen: "%s"
    routes: [%s]
`

// startIdmqCluster starts three idmq processes that form one cluster (embedded NATS, routes between them),
// sharing one signing key. They start together: each waits for a quorum of the others.
func startIdmqCluster(t *testing.T) []*idmqProc {
	t.Helper()
	nodes := newIdmqCluster(t)
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Go(n.start) // a failed start fails the test; checked below, on the test's goroutine
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return nodes
}

// newIdmqCluster prepares the three nodes of startIdmqCluster without starting them.
func newIdmqCluster(t *testing.T) []*idmqProc {
	t.Helper()
	return newIdmqClusterWith(t, "")
}

// newIdmqClusterWith is newIdmqCluster with extra top-level YAML in every node's config.
func newIdmqClusterWith(t *testing.T, extra string) []*idmqProc {
	t.Helper()
	key := filepath.Join(t.TempDir(), "signing.pem")
	writeECKey(t, key)
	routes := make([]string, 3)
	for i := range routes {
		routes[i] = fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	}
	nodes := make([]*idmqProc, 3)
	for i := range nodes {
		var others []string
		for j, r := range routes {
			if j != i {
				others = append(others, `"nats://`+r+`"`)
			}
		}
		nodes[i] = newIdmq(t, fmt.Sprintf(clusterNodeConfig, key, fmt.Sprintf("n%d", i), routes[i], strings.Join(others, ", "))+extra)
	}
	return nodes
}

// waitReady waits until p's /readyz answers 200.
func waitReady(t *testing.T, p *idmqProc, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for code, _ := p.get("/readyz"); code != 200; code, _ = p.get("/readyz") {
		if time.Now().After(deadline) {
			t.Fatalf("/readyz = %d after %s", code, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func writeECKey(t *testing.T, path string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// clusterClient connects an MQTT 5 client as alice to node p.
func clusterClient(t *testing.T, p *idmqProc, id string) *testkit.V5Client {
	t.Helper()
	c, ca := connectV5(t, dialV5(t, p, "tcp", nil), &paho.Connect{ClientID: id, CleanStart: true,
		Username: "alice", UsernameFlag: true, Password: []byte(p.token("alice")), PasswordFlag: true})
	if c == nil {
		t.Fatalf("%s refused: CONNACK 0x%02x", id, ca.ReasonCode)
	}
	return c
}

func subscribe(t *testing.T, c *testkit.V5Client, filter string, qos byte) {
	t.Helper()
	if _, err := c.Subscribe(context.Background(), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: qos}}}); err != nil {
		t.Fatal(err)
	}
}

// drain collects what c receives, keyed by topic and payload, until it has every message of want (as often as
// want says) and then nothing more for quiet, or until within passes. Waiting for want first keeps a slow
// delivery on a loaded machine from ending the collection; the quiet period catches duplicates and strays.
func drain(c *testkit.V5Client, want map[string]int, quiet, within time.Duration) map[string]int {
	got := map[string]int{}
	complete := func() bool {
		for k, n := range want {
			if got[k] < n {
				return false
			}
		}
		return true
	}
	deadline := time.After(within)
	for {
		var idle <-chan time.Time
		if complete() {
			idle = time.After(quiet)
		}
		select {
		case pb := <-c.Received:
			got[pb.Topic+"|"+string(pb.Payload)]++
		case <-idle:
			return got
		case <-deadline:
			return got
		}
	}
}

// TestClusterRoutingAcrossNodes: a message published on any node reaches every matching subscription on every
// node exactly once, at every QoS and for topics that are not NATS subjects; nothing loops between nodes.
func TestClusterRoutingAcrossNodes(t *testing.T) {
	nodes := startIdmqCluster(t)
	a, b, c := nodes[0], nodes[1], nodes[2]
	subB := clusterClient(t, b, "sub-b")
	subscribe(t, subB, "users/alice/#", 2)
	subC := clusterClient(t, c, "sub-c")
	subscribe(t, subC, "users/alice/#", 2)
	// An overlapping subscription: mochi sends a client one copy for all its matching subscriptions
	// [MQTT-3.3.4-2], routed or not.
	subscribe(t, subC, "users/alice/+/x", 1)
	pubA := clusterClient(t, a, "pub-a")
	pubB := clusterClient(t, b, "pub-b")

	levels := []string{"a.b", "with space", "*", ">", "", "é日本", "plain"}
	want := map[string]int{}
	for qos := byte(0); qos <= 2; qos++ {
		for _, l := range levels {
			topic := "users/alice/" + l + "/x"
			payload := fmt.Sprintf("q%d-%s", qos, l)
			if _, err := pubA.Publish(context.Background(), &paho.Publish{Topic: topic, QoS: qos, Payload: []byte(payload),
				Properties: &paho.PublishProperties{ContentType: "text/plain", User: paho.UserProperties{{Key: "k", Value: l}}}}); err != nil {
				t.Fatalf("publish %q: %v", topic, err)
			}
			want[topic+"|"+payload] = 1
		}
	}
	// B publishes too: A's own subscriber (none) and B's local one see it once, C once; nothing comes back.
	if _, err := pubB.Publish(context.Background(), &paho.Publish{Topic: "users/alice/from-b", QoS: 1, Payload: []byte("b")}); err != nil {
		t.Fatal(err)
	}
	want["users/alice/from-b|b"] = 1

	gotB := drain(subB, want, 3*time.Second, 30*time.Second)
	gotC := drain(subC, want, 3*time.Second, 30*time.Second)
	for k, n := range want {
		if gotB[k] != n {
			t.Errorf("node B: %q delivered %d times, want %d", k, gotB[k], n)
		}
		if gotC[k] != n {
			t.Errorf("node C: %q delivered %d times, want %d", k, gotC[k], n)
		}
	}
	if len(gotB) != len(want) || len(gotC) != len(want) {
		t.Errorf("unexpected messages: B %v, C %v", gotB, gotC)
	}
	if v, ok := a.metric("idmq_cluster_forwarded_out_total"); !ok || v == "0" {
		t.Errorf("idmq_cluster_forwarded_out_total on A = %q", v)
	}
}

// TestClusterRetainedSeenByLaterNode: a retained message published while a node was down is served by that
// node once it is back; concurrent retained publishes on two nodes end as one value on every node.
func TestClusterRetainedSeenByLaterNode(t *testing.T) {
	nodes := startIdmqCluster(t)
	a, b, c := nodes[0], nodes[1], nodes[2]
	c.stop()
	// A node stopping may have led a bucket: the others are not ready until a new leader is elected.
	waitReady(t, a, 15*time.Second)
	pubA := clusterClient(t, a, "ret-a")
	if _, err := pubA.Publish(context.Background(), &paho.Publish{Topic: "users/alice/status", QoS: 1, Retain: true, Payload: []byte("on")}); err != nil {
		t.Fatal(err)
	}
	c.start()
	sub := clusterClient(t, c, "ret-c")
	subscribe(t, sub, "users/alice/status", 1)
	if pb := sub.Expect(t, "users/alice/status", 10*time.Second); string(pb.Payload) != "on" || !pb.Retain {
		t.Fatalf("late node served %q retain=%v", pb.Payload, pb.Retain)
	}

	pubB := clusterClient(t, b, "ret-b")
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			_, _ = pubA.Publish(context.Background(), &paho.Publish{Topic: "users/alice/race", QoS: 1, Retain: true, Payload: fmt.Appendf(nil, "a%d", i)})
		})
		wg.Go(func() {
			_, _ = pubB.Publish(context.Background(), &paho.Publish{Topic: "users/alice/race", QoS: 1, Retain: true, Payload: fmt.Appendf(nil, "b%d", i)})
		})
	}
	wg.Wait()
	// Each node learns the bucket's last value from its watch: on a loaded machine that takes a moment, so the
	// nodes are asked again until they agree; values that never converge fail.
	var values []string
	for round := 0; ; round++ {
		values = values[:0]
		for i, n := range nodes {
			s := clusterClient(t, n, fmt.Sprintf("ret-check-%d-%d", round, i))
			subscribe(t, s, "users/alice/race", 1)
			values = append(values, string(s.Expect(t, "users/alice/race", 10*time.Second).Payload))
			_ = s.Disconnect(&paho.Disconnect{})
		}
		if values[0] == values[1] && values[1] == values[2] {
			return
		}
		if round == 20 {
			t.Fatalf("retained values still diverge across nodes after %d rounds: %q", round+1, values)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// TestClusterNodeFailure: a node killed with SIGKILL leaves the cluster (its peers list it gone and keep
// routing); a node cut off from the majority reports 503, refuses CONNECTs with 0x88 and, after the grace,
// ends its clients' connections.
func TestClusterNodeFailure(t *testing.T) {
	nodes := startIdmqCluster(t)
	a, b, c := nodes[0], nodes[1], nodes[2]
	stay := clusterClient(t, a, "stay-a")
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-c.exited
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, body := a.admin(t, "GET", "/v1/cluster", clusterAdminKey, "")
		if code == 200 && len(body["nodes"].([]any)) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("A still lists C 20s after its SIGKILL: %d %v", code, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
	waitReady(t, b, 15*time.Second) // leaders C held are being re-elected
	sub := clusterClient(t, b, "after-kill-b")
	subscribe(t, sub, "users/alice/#", 1)
	if _, err := stay.Publish(context.Background(), &paho.Publish{Topic: "users/alice/after", QoS: 1, Payload: []byte("x")}); err != nil {
		t.Fatalf("publish on A after C died: %v", err)
	}
	sub.Expect(t, "users/alice/after", 10*time.Second)

	// B dies too: A alone is no majority.
	if err := b.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-b.exited
	deadline = time.Now().Add(15 * time.Second)
	for code, _ := a.get("/readyz"); code != 503; code, _ = a.get("/readyz") {
		if time.Now().After(deadline) {
			t.Fatalf("/readyz on the cut-off node = %d, want 503", code)
		}
		time.Sleep(100 * time.Millisecond)
	}
	refused, ca := connectV5(t, dialV5(t, a, "tcp", nil), &paho.Connect{ClientID: "late", CleanStart: true,
		Username: "alice", UsernameFlag: true, Password: []byte(a.token("alice")), PasswordFlag: true})
	if refused != nil || ca.ReasonCode != 0x88 {
		t.Fatalf("CONNECT to the cut-off node: client %v, CONNACK 0x%02x; want refused with 0x88", refused != nil, ca.ReasonCode)
	}
	if c3, rc := connectV3(t, v3Options(a.brokerURL("tcp"), "late-v3", "alice", a.token("alice"), nil)); c3 != nil || rc != 0x03 {
		t.Fatalf("3.1.1 CONNECT to the cut-off node: return code 0x%02x; want 0x03 server unavailable", rc)
	}
	select {
	case d := <-stay.Disconnects:
		if d.ReasonCode != 0x9C {
			t.Fatalf("DISCONNECT 0x%02x, want 0x9C use another server", d.ReasonCode)
		}
	case <-time.After(20 * time.Second): // the grace is 10s
		t.Fatal("client of the cut-off node still connected after the grace")
	}
}

// TestClusterTakeoverAndRevocation: one client id, one connection across the cluster: connecting on B ends the
// connection on A with 0x8E within 1s, another user cannot take the id; a revocation posted on A ends the
// revoked user's client on C within 1s and holds on C after C restarts.
func TestClusterTakeoverAndRevocation(t *testing.T) {
	nodes := startIdmqCluster(t)
	a, b, c := nodes[0], nodes[1], nodes[2]
	old := clusterClient(t, a, "dev-1")
	start := time.Now()
	clusterClient(t, b, "dev-1")
	select {
	case d := <-old.Disconnects:
		if d.ReasonCode != 0x8E {
			t.Fatalf("old connection ended with 0x%02x, want 0x8E session taken over", d.ReasonCode)
		}
		if took := time.Since(start); took > time.Second+500*time.Millisecond { // CONNECT round trip included
			t.Fatalf("takeover took %s", took)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the connection on A survived a connection of its client id on B")
	}
	if v, ok := a.metric("idmq_cluster_takeovers_total"); !ok || v != "1" {
		t.Errorf("idmq_cluster_takeovers_total on A = %q", v)
	}
	thief, ca := connectV5(t, dialV5(t, c, "tcp", nil), &paho.Connect{ClientID: "dev-1", CleanStart: true,
		Username: "bob", UsernameFlag: true, Password: []byte(c.token("bob")), PasswordFlag: true})
	if thief != nil || ca.ReasonCode != 0x85 {
		t.Fatalf("bob taking alice's client id: client %v, CONNACK 0x%02x; want refused 0x85", thief != nil, ca.ReasonCode)
	}

	victim := clusterClient(t, c, "victim")
	tok := c.token("alice") // issued before the revocation
	code, body := a.admin(t, "POST", "/v1/revocations", clusterAdminKey, `{"username":"alice"}`)
	if code != 200 {
		t.Fatalf("revoke: %d %v", code, body)
	}
	start = time.Now()
	select {
	case d := <-victim.Disconnects:
		if d.ReasonCode != 0x98 {
			t.Fatalf("revoked client ended with 0x%02x, want 0x98", d.ReasonCode)
		}
		if took := time.Since(start); took > time.Second {
			t.Fatalf("revocation reached C after %s", took)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a revocation on A did not end alice's client on C")
	}
	c.stop()
	c.start()
	waitReady(t, c, 15*time.Second)
	refused, ca := connectV5(t, dialV5(t, c, "tcp", nil), &paho.Connect{ClientID: "after-restart", CleanStart: true,
		Username: "alice", UsernameFlag: true, Password: []byte(tok), PasswordFlag: true})
	if refused != nil || ca.ReasonCode != 0x86 {
		t.Fatalf("revoked token on restarted C: client %v, CONNACK 0x%02x; want 0x86", refused != nil, ca.ReasonCode)
	}
}

package e2e

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/idmq/idmq/internal/testkit"
)

// externalNodeConfig is one idmq node on an external NATS (cluster.nats.url); after clusterNodeBase's, %s is
// the NATS URL.
const externalNodeConfig = clusterNodeBase + `    url: "%s"
`

// startExternalNATS builds the nats-server of our go.mod (the Debian package is too old for the JetStream
// features the cluster uses) and runs it as its own process with JetStream, on a loopback port, with a token.
// It returns the URL idmq connects with.
func startExternalNATS(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "nats-server")
	build := exec.Command("go", "build", "-o", bin, "github.com/nats-io/nats-server/v2")
	build.Dir = repoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building nats-server: %v\n%s", err, out)
	}
	port := testkit.FreePort(t)
	const secret = "ext-nats-token-0123"
	logs := &testkit.LogBuffer{}
	cmd := exec.Command(bin, "-a", "127.0.0.1", "-p", fmt.Sprint(port), "-js", "-sd", filepath.Join(dir, "js"),
		"--auth", secret, "-n", "external")
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("nats-server logs:\n%s", logs.String())
		}
	})
	testkit.Eventually(t, 15*time.Second, func() bool {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
		}
		return err == nil
	}, "external nats-server accepting on %d", port)
	return fmt.Sprintf("nats://%s@127.0.0.1:%d", secret, port)
}

// TestClusterExternalNATS: two idmq nodes on one external nats-server (cluster.nats.url, no embedded server)
// act as one broker: messages route between them once per subscription at every QoS, retained messages are
// cluster-wide (a node restarted later serves them), one client id has one connection across both, and
// GET /v1/cluster names the external server as the stream's leader.
func TestClusterExternalNATS(t *testing.T) {
	url := startExternalNATS(t)
	key := filepath.Join(t.TempDir(), "signing.pem")
	writeECKey(t, key)
	a := newIdmq(t, fmt.Sprintf(externalNodeConfig, key, "ext-a", url))
	b := newIdmq(t, fmt.Sprintf(externalNodeConfig, key, "ext-b", url))
	a.start()
	b.start()

	code, st := a.admin(t, "GET", "/v1/cluster", clusterAdminKey, "")
	if code != 200 || st["stream_leader"] != "external" || len(st["nodes"].([]any)) != 2 {
		t.Fatalf("GET /v1/cluster on A: %d %v; want 200, both nodes, stream leader \"external\"", code, st)
	}

	// Routing, both ways, each QoS, once per subscription.
	subB := clusterClient(t, b, "ext-sub-b")
	subscribe(t, subB, "users/alice/#", 2)
	subA := clusterClient(t, a, "ext-sub-a")
	subscribe(t, subA, "users/alice/from-b/#", 1)
	pubA := clusterClient(t, a, "ext-pub-a")
	pubB := clusterClient(t, b, "ext-pub-b")
	want := map[string]int{}
	for qos := byte(0); qos <= 2; qos++ {
		topic := fmt.Sprintf("users/alice/from-a/q%d.x y", qos)
		if _, err := pubA.Publish(context.Background(), &paho.Publish{Topic: topic, QoS: qos, Payload: []byte("a")}); err != nil {
			t.Fatalf("publish on A: %v", err)
		}
		want[topic+"|a"] = 1
	}
	if _, err := pubB.Publish(context.Background(), &paho.Publish{Topic: "users/alice/from-b/1", QoS: 1, Payload: []byte("b")}); err != nil {
		t.Fatal(err)
	}
	want["users/alice/from-b/1|b"] = 1
	gotB := drain(subB, want, 2*time.Second, 20*time.Second)
	for k, n := range want {
		if gotB[k] != n {
			t.Errorf("node B: %q delivered %d times, want %d", k, gotB[k], n)
		}
	}
	if len(gotB) != len(want) {
		t.Errorf("node B got unexpected messages: %v", gotB)
	}
	fromB := map[string]int{"users/alice/from-b/1|b": 1}
	if gotA := drain(subA, fromB, time.Second, 10*time.Second); len(gotA) != 1 || gotA["users/alice/from-b/1|b"] != 1 {
		t.Errorf("node A's subscriber got %v, want the one message from B once", gotA)
	}

	// Retained messages live in the external server: B, restarted after A stored one, serves it.
	b.stop()
	if _, err := pubA.Publish(context.Background(), &paho.Publish{Topic: "users/alice/status", QoS: 1, Retain: true, Payload: []byte("on")}); err != nil {
		t.Fatal(err)
	}
	b.start()
	late := clusterClient(t, b, "ext-late-b")
	subscribe(t, late, "users/alice/status", 1)
	if pb := late.Expect(t, "users/alice/status", 10*time.Second); string(pb.Payload) != "on" || !pb.Retain {
		t.Fatalf("restarted B served %q retain=%v, want the retained \"on\" from A", pb.Payload, pb.Retain)
	}

	// Takeover: the same client id connecting on B ends its connection on A.
	old := clusterClient(t, a, "ext-dev")
	clusterClient(t, b, "ext-dev")
	if d := old.NextDisconnect(t, 5*time.Second); d.ReasonCode != 0x8E {
		t.Fatalf("old connection on A ended with 0x%02x, want 0x8E session taken over", d.ReasonCode)
	}
}

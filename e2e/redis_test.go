package e2e

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/idmq/idmq/internal/testkit"
)

// TestRedisStoreKeepsSessionsAcrossRestart: with `storage: {type: redis}`, a persistent session and its
// queued QoS 1 messages live in Redis, so a restarted idmq (or another node on the same Redis) resumes them.
func TestRedisStoreKeepsSessionsAcrossRestart(t *testing.T) {
	bin := requireTool(t, "redis-server", "apt-get install redis-server")
	port := testkit.FreePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	redis := exec.CommandContext(ctx, bin, "--bind", "127.0.0.1", "--port", strconv.Itoa(port),
		"--save", "", "--appendonly", "no", "--requirepass", "s3cret-for-tests", "--dir", t.TempDir())
	if err := redis.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = redis.Wait() })
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("redis-server did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Setenv("IDMQ_TEST_REDIS_PASSWORD", "s3cret-for-tests")
	p := newIdmq(t, fmt.Sprintf(`
listeners: [{type: tcp, address: "127.0.0.1:{{tcp}}"}]
http: {address: "127.0.0.1:{{http}}"}
storage: {type: redis, address: "127.0.0.1:%d", password: "${IDMQ_TEST_REDIS_PASSWORD}", db: 3}
auth: {providers: [{name: local, type: local}]}
acl: {rules: [{topic: "users/%%u/#", access: pubsub}]}
`, port))
	p.start()
	tok := p.token("alice")
	url := p.brokerURL("tcp")
	sub, _ := connectV3(t, v3Options(url, "redis-sub", "alice", tok, nil).SetCleanSession(false))
	waitToken(t, sub.Subscribe("users/alice/q", 1, nil), "subscribe")
	sub.Disconnect(100)
	pub, _ := connectV3(t, v3Options(url, "redis-pub", "alice", tok, nil))
	const n = 20
	for i := 0; i < n; i++ {
		waitToken(t, pub.Publish("users/alice/q", 1, false, strconv.Itoa(i)), "publish")
	}
	pub.Disconnect(100)
	if code := p.stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
	p.start()
	got := newCollectV3()
	o := v3Options(url, "redis-sub", "alice", tok, nil).SetCleanSession(false)
	o.SetDefaultPublishHandler(got.handler)
	if _, code := connectV3(t, o); code != 0 {
		t.Fatalf("CONNACK %d", code)
	}
	seen := map[string]bool{}
	deadline := time.After(10 * time.Second)
	for len(seen) < n {
		select {
		case m := <-got.ch:
			seen[string(m.Payload())] = true
		case <-deadline:
			t.Fatalf("after restart on redis: %d of %d queued messages", len(seen), n)
		}
	}
}

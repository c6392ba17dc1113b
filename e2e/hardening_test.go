package e2e

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/idmq/idmq/internal/testkit"
)

// TestSilentConnectionsAreClosedAndDoNotBlockOthers: 2,000 sockets that never send CONNECT neither stop a
// real client from connecting within 1 s nor stay open past mqtt.connect_timeout.
func TestSilentConnectionsAreClosedAndDoNotBlockOthers(t *testing.T) {
	p := newIdmq(t, `
listeners: [{type: tcp, address: "127.0.0.1:{{tcp}}"}, {type: ws, address: "127.0.0.1:{{ws}}"}]
http: {address: "127.0.0.1:{{http}}"}
mqtt: {connect_timeout: 2s}
auth: {providers: [{name: local, type: local}]}
acl: {rules: [{topic: "users/%u/#", access: pubsub}]}
`)
	p.start()
	tok := p.token("alice")
	const silent = 2000
	conns := make([]net.Conn, 0, silent)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < silent; i++ {
		addr := p.addr("tcp")
		if i%2 == 1 {
			addr = p.addr("ws") // half of them hold an HTTP connection that never upgrades
		}
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("silent connection %d: %v", i, err)
		}
		conns = append(conns, c)
	}
	opened := time.Now()
	start := time.Now()
	c, code := connectV3(t, v3Options(p.brokerURL("tcp"), "real-client", "alice", tok, nil))
	if code != 0 || c == nil {
		t.Fatalf("CONNACK %d", code)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("a real client took %s to connect beside %d silent sockets", took, silent)
	}

	// Every silent socket is closed by the broker once connect_timeout has passed.
	for i, s := range conns {
		_ = s.SetReadDeadline(opened.Add(10 * time.Second))
		buf := make([]byte, 512)
		for {
			_, err := s.Read(buf)
			if err == nil {
				continue // a websocket listener may answer 408/400 before closing
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("silent connection %d still open %s after it was made", i, time.Since(opened))
			}
			break
		}
	}
	if took := time.Since(opened); took > 8*time.Second {
		t.Fatalf("closing silent connections took %s with connect_timeout 2s", took)
	}
}

func TestConnectRateLimitPerIP(t *testing.T) {
	p := newIdmq(t, `
listeners: [{type: tcp, address: "127.0.0.1:{{tcp}}"}]
http: {address: "127.0.0.1:{{http}}"}
mqtt: {max_connect_rate: {per_second: 0.5, burst: 3}}
auth: {providers: [{name: local, type: local}]}
acl: {rules: [{topic: "users/%u/#", access: pubsub}]}
`)
	p.start()
	tok := p.token("alice")
	for i := 0; i < 3; i++ {
		if c, ca := connectV5(t, dialV5(t, p, "tcp", nil), testkit.JWTConnect("burst", "alice", tok)); c == nil {
			t.Fatalf("connect %d inside the burst: 0x%02x", i, ca.ReasonCode)
		}
	}
	if c, ca := connectV5(t, dialV5(t, p, "tcp", nil), testkit.JWTConnect("over", "alice", tok)); c != nil || ca.ReasonCode != 0x9F {
		t.Fatalf("v5 connect over the rate: %+v, want CONNACK 0x9F", ca)
	}
	o := v3Options(p.brokerURL("tcp"), "over-v3", "alice", tok, nil).SetConnectTimeout(3 * time.Second)
	if c, code := connectV3(t, o); c != nil {
		t.Fatalf("v3 connect over the rate accepted (code %d)", code)
	}
	if v, ok := p.metric("idmq_connect_rate_limited_total"); !ok || v != "2" {
		t.Fatalf("idmq_connect_rate_limited_total = %q, want 2", v)
	}
}

// TestCorruptStoreRefusesToStart: a damaged bolt file is an error naming the file, never an empty start.
func TestCorruptStoreRefusesToStart(t *testing.T) {
	p := newIdmq(t, `
data_dir: ./data
listeners: [{type: tcp, address: "127.0.0.1:{{tcp}}"}]
http: {address: "127.0.0.1:{{http}}"}
auth: {providers: [{name: local, type: local}]}
acl: {rules: [{topic: "users/%u/#", access: pubsub}]}
`)
	if err := os.MkdirAll(filepath.Join(p.dir, "data"), 0o700); err != nil {
		t.Fatal(err)
	}
	garbage := []byte(strings.Repeat("not a bolt database ", 1000))
	if err := os.WriteFile(filepath.Join(p.dir, "data", "idmq.db"), garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := p.idmqCmd("serve", "-c", p.config)
	if code == 0 || !strings.Contains(errOut, "storage (bolt") || !strings.Contains(errOut, "idmq.db") {
		t.Fatalf("serve on a corrupt store: exit %d, stderr %q", code, errOut)
	}
	if after, _ := os.ReadFile(filepath.Join(p.dir, "data", "idmq.db")); string(after) != string(garbage) {
		t.Fatal("the corrupt store was modified")
	}
}

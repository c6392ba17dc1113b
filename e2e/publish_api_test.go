package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/idmq/idmq/internal/testkit"
)

const (
	publishAdminKey  = "publish-e2e-admin-0123456789abcdef"
	publishNotifyKey = "publish-e2e-notify-0123456789abcdef"
)

// publishBrokerConfig has the publish API on: the admin key, and a notifications key read from the
// environment as a deployment would. Packets are capped at 4 KiB so that 413 is cheap to reach.
const publishBrokerConfig = `
data_dir: ./data
listeners:
  - {type: tcp, address: "127.0.0.1:{{tcp}}"}
http:
  address: "127.0.0.1:{{http}}"
  admin_keys: ["` + publishAdminKey + `"]
  publish_keys:
    - {key: "${IDMQ_E2E_NOTIFY_KEY}", topics: ["notifications/#"]}
  publish_rate_limit: {per_second: 0.2, burst: 100}
mqtt: {max_packet_size: 4096}
auth:
  providers:
    - {name: local, type: local}
acl:
  rules:
    - {topic: "users/%u/#", access: pubsub}
    - {topic: "notifications/#", access: subscribe}
`

func startPublishBroker(t *testing.T) *idmqProc {
	t.Helper()
	t.Setenv("IDMQ_E2E_NOTIFY_KEY", publishNotifyKey)
	p := newIdmq(t, publishBrokerConfig)
	p.start()
	return p
}

// publishHTTP POSTs body to /v1/publish with key, as curl would, and returns the status and the body.
func publishHTTP(t *testing.T, p *idmqProc, key, body string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+p.addr("http")+"/v1/publish", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// publishSubscriber connects alice's MQTT 5 client (a persistent session when expiry > 0) subscribed to
// filter at QoS 2.
func publishSubscriber(t *testing.T, p *idmqProc, id, filter string, expiry uint32, cleanStart bool) *testkit.V5Client {
	t.Helper()
	cp := &paho.Connect{ClientID: id, CleanStart: cleanStart, Username: "alice", UsernameFlag: true,
		Password: []byte(p.token("alice")), PasswordFlag: true,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry, RequestProblemInfo: true}}
	c, ca := connectV5(t, dialV5(t, p, "tcp", nil), cp)
	if c == nil {
		t.Fatalf("%s refused: CONNACK 0x%02x", id, ca.ReasonCode)
	}
	if filter != "" {
		subscribe(t, c, filter, 2)
	}
	return c
}

// TestPublishAPIDeliversAtEachQoS: a backend's POST reaches a paho subscriber at QoS 0, 1 and 2 with its
// properties; a retained one reaches a later subscriber; a batch is answered item by item.
func TestPublishAPIDeliversAtEachQoS(t *testing.T) {
	p := startPublishBroker(t)
	sub := publishSubscriber(t, p, "alice-live", "users/alice/#", 0, true)
	for qos := 0; qos <= 2; qos++ {
		code, body, _ := publishHTTP(t, p, publishAdminKey, fmt.Sprintf(`{"topic": "users/alice/inbox", "payload": "q%d", "qos": %d,
			"properties": {"content_type": "text/plain", "user_properties": {"source": "billing"}}}`, qos, qos))
		if code != 200 {
			t.Fatalf("qos %d: %d %s", qos, code, body)
		}
		m := sub.Expect(t, "users/alice/inbox", 10*time.Second)
		if string(m.Payload) != fmt.Sprintf("q%d", qos) || int(m.QoS) != qos || m.Properties.ContentType != "text/plain" ||
			len(m.Properties.User) != 1 || m.Properties.User[0].Value != "billing" {
			t.Fatalf("qos %d: got %q at QoS %d, %+v", qos, m.Payload, m.QoS, m.Properties)
		}
	}

	code, body, _ := publishHTTP(t, p, publishNotifyKey, `{"topic": "notifications/maintenance", "payload": "tonight", "qos": 1, "retain": true}`)
	if code != 200 {
		t.Fatalf("retained: %d %s", code, body)
	}
	later := publishSubscriber(t, p, "alice-later", "notifications/#", 0, true)
	if m := later.Expect(t, "notifications/maintenance", 10*time.Second); string(m.Payload) != "tonight" || !m.Retain {
		t.Fatalf("later subscriber: %q retain=%v", m.Payload, m.Retain)
	}

	code, body, _ = publishHTTP(t, p, publishAdminKey, `[{"topic": "users/alice/b", "payload": "1", "qos": 1},
		{"topic": "users/alice/+", "payload": "wildcard"}, {"topic": "users/alice/b", "payload": "2", "qos": 2}]`)
	var results []struct {
		Status int    `json:"status"`
		Error  string `json:"error"`
	}
	if err := json.Unmarshal([]byte(body), &results); err != nil || code != 207 || len(results) != 3 ||
		results[0].Status != 200 || results[1].Status != 400 || results[1].Error != "invalid_topic" || results[2].Status != 200 {
		t.Fatalf("batch: %d %s", code, body)
	}
	for _, want := range []string{"1", "2"} {
		if m := sub.Expect(t, "users/alice/b", 10*time.Second); string(m.Payload) != want {
			t.Fatalf("batch delivered %q, want %q", m.Payload, want)
		}
	}
	if v, _ := p.metric(`idmq_http_publish_total{result="published"}`); v != "6" {
		t.Fatalf(`idmq_http_publish_total{result="published"} = %q, want 6`, v)
	}
}

// TestPublishAPIRefusals: the notifications key gets 403 outside its scope, a wrong key 403, a message over
// mqtt.max_packet_size 413, and a key past its rate limit 429 while the admin key still publishes.
func TestPublishAPIRefusals(t *testing.T) {
	p := startPublishBroker(t)
	sub := publishSubscriber(t, p, "alice-live", "users/alice/#", 0, true)
	cases := []struct {
		name, key, body string
		status          int
		code            string
	}{
		{"out of the key's scope", publishNotifyKey, `{"topic": "users/alice/x", "payload": "spoofed"}`, 403, "topic_not_allowed"},
		{"wrong key", "not-a-key-0123456789abcdef", `{"topic": "notifications/a"}`, 403, "forbidden"},
		{"$SYS even for admin", publishAdminKey, `{"topic": "$SYS/broker/uptime", "payload": "0"}`, 403, "topic_not_allowed"},
		{"over max_packet_size", publishAdminKey, `{"topic": "users/alice/x", "payload": "` + strings.Repeat("x", 4096) + `"}`, 413, "packet_too_large"},
		{"bad JSON", publishAdminKey, `{"topic": "users/alice/x", "qos": 1`, 400, "invalid_json"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, body, _ := publishHTTP(t, p, c.key, c.body)
			var e struct {
				Error string `json:"error"`
			}
			_ = json.Unmarshal([]byte(body), &e)
			if code != c.status || e.Error != c.code {
				t.Fatalf("%d %.200s, want %d %s", code, body, c.status, c.code)
			}
		})
	}
	// None of the refused messages arrived: the next one is the marker.
	if code, body, _ := publishHTTP(t, p, publishAdminKey, `{"topic": "users/alice/marker", "payload": "m"}`); code != 200 {
		t.Fatalf("marker: %d %s", code, body)
	}
	if m := sub.Next(t, 10*time.Second); m.Topic != "users/alice/marker" {
		t.Fatalf("a refused message was delivered: %s %q", m.Topic, m.Payload)
	}

	// The rate limit counts messages per key (burst 100, one more every 5 s): a batch of 99 after the
	// request above spends the bucket, and one of the next few requests gets 429.
	batch := "[" + strings.TrimSuffix(strings.Repeat(`{"topic": "notifications/n"},`, 99), ",") + "]"
	if code, body, _ := publishHTTP(t, p, publishNotifyKey, batch); code != 200 {
		t.Fatalf("batch of 99: %d %.200s", code, body)
	}
	limited := false
	for range 5 {
		code, body, h := publishHTTP(t, p, publishNotifyKey, `{"topic": "notifications/n"}`)
		if code == 200 {
			continue
		}
		if code != 429 || !strings.Contains(body, `"rate_limited"`) || h.Get("Retry-After") == "" {
			t.Fatalf("past the limit: %d %s Retry-After=%q", code, body, h.Get("Retry-After"))
		}
		limited = true
		break
	}
	if !limited {
		t.Fatal("no 429 after the key's burst was spent")
	}
	if code, body, _ := publishHTTP(t, p, publishAdminKey, `{"topic": "users/alice/x"}`); code != 200 {
		t.Fatalf("another key while one is limited: %d %s", code, body)
	}
	for result, want := range map[string]string{"forbidden": "3", "too_large": "1", "invalid": "1", "rate_limited": "1"} {
		if v, _ := p.metric(`idmq_http_publish_total{result="` + result + `"}`); v != want {
			t.Errorf(`idmq_http_publish_total{result=%q} = %q, want %s`, result, v, want)
		}
	}
}

// TestPublishAPIKill9AfterOK: a 200 for a QoS 1 publish is never lost. The broker is killed with SIGKILL
// right after the last 200; after a restart on the same data_dir the offline persistent session gets
// every message, and a new subscriber the retained one.
func TestPublishAPIKill9AfterOK(t *testing.T) {
	p := startPublishBroker(t)
	offline := publishSubscriber(t, p, "alice-phone", "users/alice/#", 3600, true)
	if err := offline.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the broker has processed the DISCONNECT: the session is offline
	const n = 20
	for i := range n {
		code, body, _ := publishHTTP(t, p, publishAdminKey, fmt.Sprintf(`{"topic": "users/alice/inbox", "payload": "m%02d", "qos": 1}`, i))
		if code != 200 {
			t.Fatalf("publish %d: %d %s", i, code, body)
		}
	}
	code, body, _ := publishHTTP(t, p, publishNotifyKey, `{"topic": "notifications/kept", "payload": "retained", "qos": 1, "retain": true}`)
	if code != 200 {
		t.Fatalf("retained: %d %s", code, body)
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.exited
	p.start()

	back := publishSubscriber(t, p, "alice-phone", "", 3600, false)
	got := map[string]bool{}
	deadline := time.After(20 * time.Second)
	for len(got) < n {
		select {
		case m := <-back.Received:
			got[string(m.Payload)] = true
		case <-deadline:
			t.Fatalf("after the restart the session got %d of %d acknowledged messages: %v", len(got), n, got)
		}
	}
	fresh := publishSubscriber(t, p, "alice-new", "notifications/#", 0, true)
	if m := fresh.Expect(t, "notifications/kept", 10*time.Second); string(m.Payload) != "retained" {
		t.Fatalf("retained after the restart: %q", m.Payload)
	}
}

// TestPublishAPIClustered: a QoS 1 publish on node A is answered once JetStream has it and reaches a
// subscriber on node B; a retained one reaches a later subscriber on node C.
func TestPublishAPIClustered(t *testing.T) {
	nodes := startIdmqCluster(t)
	onB := clusterClient(t, nodes[1], "alice-b")
	subscribe(t, onB, "users/alice/#", 1)
	code, body, _ := publishHTTP(t, nodes[0], clusterAdminKey, `{"topic": "users/alice/from-http", "payload": "via A", "qos": 1}`)
	if code != 200 {
		t.Fatalf("publish on A: %d %s", code, body)
	}
	if m := onB.Expect(t, "users/alice/from-http", 15*time.Second); string(m.Payload) != "via A" {
		t.Fatalf("on B: %q", m.Payload)
	}
	code, body, _ = publishHTTP(t, nodes[0], clusterAdminKey, `{"topic": "users/alice/status", "payload": "online", "qos": 1, "retain": true}`)
	if code != 200 {
		t.Fatalf("retained on A: %d %s", code, body)
	}
	onC := clusterClient(t, nodes[2], "alice-c")
	// The bucket reaches C within a moment; subscribe until the retained message is there.
	testkit.Eventually(t, 15*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := onC.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "users/alice/status", QoS: 1}}}); err != nil {
			return false
		}
		select {
		case m := <-onC.Received:
			return string(m.Payload) == "online"
		case <-time.After(500 * time.Millisecond):
			return false
		}
	}, "the retained message never reached node C")
}

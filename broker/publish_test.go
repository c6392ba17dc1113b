package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/idmq/idmq/authhook"
	"github.com/idmq/idmq/internal/testkit"
)

const (
	testAdminKey  = "admin-key-0123456789abcdef"
	testNotifyKey = "notify-key-0123456789abcdef"
	testOtherKey  = "other-key-0123456789abcdef"
)

// publishBroker is a started broker with the publish API on, storing in bolt (with the write-ahead log).
type publishBroker struct {
	*Broker
	api string // http://host:port
}

// startBroker builds and starts a broker from cfg, logging to log; it closes when the test ends.
func startBroker(t *testing.T, cfg *Config, log *slog.Logger) *Broker {
	t.Helper()
	b, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	return b
}

func startPublishBroker(t *testing.T, extraHTTP string) *publishBroker {
	t.Helper()
	yaml := fmt.Sprintf(`
data_dir: %s
listeners: [{type: tcp, address: "127.0.0.1:0"}]
http:
  address: "127.0.0.1:0"
  admin_keys: [%s]
  publish_keys:
    - {key: %s, topics: ["notifications/#", "users/+/inbox"]}
    - {key: %s, topics: ["other/#"]}
%s
auth: {providers: [{name: local, type: local}]}
acl: {rules: [{topic: "users/%%u/#", access: pubsub}, {topic: "notifications/#", access: subscribe}]}
`, t.TempDir(), testAdminKey, testNotifyKey, testOtherKey, extraHTTP)
	cfg, err := Parse([]byte(yaml), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b := startBroker(t, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	return &publishBroker{Broker: b, api: "http://" + b.Addresses()["http"]}
}

// subscriber connects an MQTT 5 client as user and subscribes to filter at QoS 2.
func (pb *publishBroker) subscriber(t *testing.T, user, filter string) *testkit.V5Client {
	t.Helper()
	tok, err := pb.auth.LocalIssuer().Mint(user, time.Hour, nil, authhook.TopicGrants{})
	if err != nil {
		t.Fatal(err)
	}
	cp := testkit.JWTConnect(user+"-sub", user, tok)
	// mochi v2.7.9 leaves user properties out of PUBLISH packets to a client that sent Request Problem
	// Information 0 (paho's default), though [MQTT-3.1.2-29] exempts PUBLISH.
	cp.Properties.RequestProblemInfo = true
	c, _, err := testkit.ConnectV5(t, testkit.DialTCP(t, pb.Addresses()["tcp0"]), cp)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 2}}})
	if err != nil || sa.Reasons[0] > 2 {
		t.Fatalf("subscribe %s: %v %v", filter, sa, err)
	}
	return c
}

// post sends body to /v1/publish with key ("" sends no Authorization) and decodes the JSON answer.
func (pb *publishBroker) post(t *testing.T, key, body string) (int, http.Header, json.RawMessage) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, pb.api+publishPath, strings.NewReader(body))
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, raw
}

func errorCode(raw json.RawMessage) string {
	var e struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal(raw, &e)
	return e.Error
}

// TestPublishReachesSubscribersWithItsProperties: each QoS arrives at the subscriber's QoS with the MQTT 5
// properties the body set (user properties in the order written), from the configured publisher id.
func TestPublishReachesSubscribersWithItsProperties(t *testing.T) {
	pb := startPublishBroker(t, "")
	sub := pb.subscriber(t, "alice", "users/alice/#")
	for qos := 0; qos <= 2; qos++ {
		body := fmt.Sprintf(`{"topic": "users/alice/inbox", "payload": "hello %d", "qos": %d, "properties": {
			"content_type": "text/plain", "response_topic": "users/alice/replies", "correlation_data_base64": "AAEC",
			"message_expiry": 600, "user_properties": {"z": "1", "a": "2"}}}`, qos, qos)
		code, _, raw := pb.post(t, testNotifyKey, body)
		if code != 200 || string(raw) != `{"status":200}`+"\n" {
			t.Fatalf("qos %d: %d %s", qos, code, raw)
		}
		m := sub.Expect(t, "users/alice/inbox", 5*time.Second)
		p := m.Properties
		if string(m.Payload) != fmt.Sprintf("hello %d", qos) || int(m.QoS) != qos || p.ContentType != "text/plain" ||
			p.ResponseTopic != "users/alice/replies" || string(p.CorrelationData) != "\x00\x01\x02" ||
			p.MessageExpiry == nil || *p.MessageExpiry == 0 || *p.MessageExpiry > 600 ||
			len(p.User) != 2 || p.User[0].Key != "z" || p.User[1].Key != "a" {
			t.Fatalf("qos %d: got %+v %+v", qos, m, p)
		}
	}
	// The list form of user properties keeps a key given twice; payload_base64 carries bytes.
	code, _, raw := pb.post(t, testAdminKey, `{"topic": "users/alice/x", "payload_base64": "/wA=",
		"properties": {"user_properties": [{"key": "k", "value": "1"}, {"key": "k", "value": "2"}]}}`)
	if code != 200 {
		t.Fatalf("%d %s", code, raw)
	}
	m := sub.Expect(t, "users/alice/x", 5*time.Second)
	if string(m.Payload) != "\xff\x00" || len(m.Properties.User) != 2 || m.Properties.User[1].Value != "2" {
		t.Fatalf("got %q %+v", m.Payload, m.Properties.User)
	}
}

// TestPublishRetainedReachesLaterSubscribers: a retained publish is kept; an empty retained payload clears it.
func TestPublishRetainedReachesLaterSubscribers(t *testing.T) {
	pb := startPublishBroker(t, "")
	if code, _, raw := pb.post(t, testNotifyKey, `{"topic": "notifications/motd", "payload": "kept", "qos": 1, "retain": true}`); code != 200 {
		t.Fatalf("%d %s", code, raw)
	}
	later := pb.subscriber(t, "bob", "notifications/#")
	if m := later.Expect(t, "notifications/motd", 5*time.Second); string(m.Payload) != "kept" || !m.Retain {
		t.Fatalf("retained: %q retain=%v", m.Payload, m.Retain)
	}
	if code, _, raw := pb.post(t, testNotifyKey, `{"topic": "notifications/motd", "retain": true}`); code != 200 {
		t.Fatalf("%d %s", code, raw)
	}
	if n := pb.server.Topics.Messages("notifications/#"); len(n) != 0 {
		t.Fatalf("retained after clearing: %d", len(n))
	}
}

// TestPublishKeysAndScopes: like the admin API, 401 without a key and 403 with a wrong one; each key publishes
// only where its filters match, with the ACL's matcher; no key publishes to '$' topics.
func TestPublishKeysAndScopes(t *testing.T) {
	pb := startPublishBroker(t, "")
	cases := []struct {
		name, key, topic string
		status           int
		code             string
	}{
		{"no key", "", "notifications/a", 401, "unauthorized"},
		{"wrong key", "not-a-key-0123456789abcdef", "notifications/a", 403, "forbidden"},
		{"in scope", testNotifyKey, "notifications/a/b", 200, ""},
		{"parent of a # filter", testNotifyKey, "notifications", 200, ""},
		{"single-level wildcard", testNotifyKey, "users/bob/inbox", 200, ""},
		{"deeper than +", testNotifyKey, "users/bob/inbox/x", 403, "topic_not_allowed"},
		{"out of scope", testNotifyKey, "users/alice/x", 403, "topic_not_allowed"},
		{"another key's scope", testOtherKey, "notifications/a", 403, "topic_not_allowed"},
		{"admin everywhere", testAdminKey, "users/alice/x", 200, ""},
		{"no $ topics for admin", testAdminKey, "$SYS/broker/x", 403, "topic_not_allowed"},
		{"no $ topics for a key", testNotifyKey, "$notifications/a", 403, "topic_not_allowed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, h, raw := pb.post(t, c.key, fmt.Sprintf(`{"topic": %q, "payload": "x"}`, c.topic))
			if code != c.status || errorCode(raw) != c.code {
				t.Fatalf("%d %s, want %d %q", code, raw, c.status, c.code)
			}
			if code == 401 && h.Get("WWW-Authenticate") == "" {
				t.Fatal("401 without WWW-Authenticate")
			}
		})
	}
}

// TestPublishOffWithoutKeys: with neither admin nor publish keys the endpoint does not exist.
func TestPublishOffWithoutKeys(t *testing.T) {
	b := startWalkBroker(t, "")
	resp, err := http.Post("http://"+b.Addresses()["http"]+publishPath, "application/json", strings.NewReader(`{"topic":"a"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("%d", resp.StatusCode)
	}
}

// TestPublishRefusesBadMessages: each malformed message gets 400 (or 413) with a stable code, and nothing
// reaches the subscriber.
func TestPublishRefusesBadMessages(t *testing.T) {
	pb := startPublishBroker(t, "")
	sub := pb.subscriber(t, "alice", "users/alice/#")
	big := strings.Repeat("x", 262144)
	cases := []struct {
		name, body string
		status     int
		code       string
	}{
		{"not JSON", `{"topic": `, 400, "invalid_json"},
		{"unknown field", `{"topic": "users/alice/a", "qso": 1}`, 400, "invalid_json"},
		{"trailing data", `{"topic": "users/alice/a"} {}`, 400, "invalid_json"},
		{"qos as string", `{"topic": "users/alice/a", "qos": "1"}`, 400, "invalid_json"},
		{"invalid UTF-8", "{\"topic\": \"users/alice/\xff\"}", 400, "invalid_json"},
		{"no topic", `{"payload": "x"}`, 400, "invalid_topic"},
		{"wildcard +", `{"topic": "users/alice/+"}`, 400, "invalid_topic"},
		{"wildcard #", `{"topic": "users/alice/#"}`, 400, "invalid_topic"},
		{"NUL", `{"topic": "users/alice/\u0000"}`, 400, "invalid_topic"},
		{"topic too long", `{"topic": "users/alice/` + strings.Repeat("a", 65536) + `"}`, 400, "invalid_topic"},
		{"qos 3", `{"topic": "users/alice/a", "qos": 3}`, 400, "invalid_qos"},
		{"both payloads", `{"topic": "users/alice/a", "payload": "x", "payload_base64": "eA=="}`, 400, "invalid_payload"},
		{"bad base64", `{"topic": "users/alice/a", "payload_base64": "not base64!"}`, 400, "invalid_payload"},
		{"response topic wildcard", `{"topic": "users/alice/a", "properties": {"response_topic": "a/#"}}`, 400, "invalid_properties"},
		{"expiry negative", `{"topic": "users/alice/a", "properties": {"message_expiry": -1}}`, 400, "invalid_properties"},
		{"user property not a string", `{"topic": "users/alice/a", "properties": {"user_properties": {"a": 1}}}`, 400, "invalid_json"},
		{"empty batch", `[]`, 400, "empty_batch"},
		{"batch of 101", "[" + strings.Repeat(`{"topic": "users/alice/a"},`, 100) + `{"topic": "users/alice/a"}]`, 400, "batch_too_large"},
		{"over max_packet_size", `{"topic": "users/alice/a", "payload": "` + big + `"}`, 413, "packet_too_large"},
		{"body over 4 x max_packet_size", `{"topic": "users/alice/a", "payload": "` + strings.Repeat(big, 5) + `"}`, 413, "body_too_large"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, _, raw := pb.post(t, testAdminKey, c.body)
			if code != c.status || errorCode(raw) != c.code {
				t.Fatalf("%d %.300s, want %d %q", code, raw, c.status, c.code)
			}
		})
	}
	// Just under the limit is published: the limit is the packet's, not the payload's.
	// fixed header 1 + remaining length 3, topic 2 + 13, packet id 2, properties length 1
	fits := strings.Repeat("x", 262144-(1+3+2+len("users/alice/a")+2+1))
	if code, _, raw := pb.post(t, testAdminKey, `{"topic": "users/alice/a", "qos": 1, "payload": "`+fits+`"}`); code != 200 {
		t.Fatalf("a packet of exactly max_packet_size: %d %s", code, raw)
	}
	if m := sub.Next(t, 5*time.Second); len(m.Payload) != len(fits) {
		t.Fatalf("first message after the refusals has %d bytes", len(m.Payload))
	}
}

// TestPublishBatchAnswersEachItem: a batch publishes the good items in order and answers each in its place.
func TestPublishBatchAnswersEachItem(t *testing.T) {
	pb := startPublishBroker(t, "")
	sub := pb.subscriber(t, "alice", "users/alice/#")
	code, _, raw := pb.post(t, testNotifyKey, `[
		{"topic": "users/alice/inbox", "payload": "1", "qos": 1},
		{"topic": "users/alice/secret", "payload": "no"},
		{"topic": "users/alice/inbox", "payload": "2", "qos": 2},
		{"topic": "users/alice/inbox", "qos": 7},
		{"topic": "users/alice/inbox", "payload": "3"}]`)
	var results []publishResult
	if err := json.Unmarshal(raw, &results); err != nil || code != http.StatusMultiStatus || len(results) != 5 {
		t.Fatalf("%d %s", code, raw)
	}
	want := []struct {
		status int
		code   string
	}{{200, ""}, {403, "topic_not_allowed"}, {200, ""}, {400, "invalid_qos"}, {200, ""}}
	for i, w := range want {
		if results[i].Status != w.status || results[i].Error != w.code {
			t.Fatalf("item %d: %+v, want %d %q", i, results[i], w.status, w.code)
		}
	}
	for _, p := range []string{"1", "2", "3"} {
		if m := sub.Next(t, 5*time.Second); string(m.Payload) != p {
			t.Fatalf("got %q, want %q", m.Payload, p)
		}
	}
	code, _, raw = pb.post(t, testNotifyKey, `[{"topic": "users/alice/inbox", "payload": "4"}]`)
	if code != 200 || string(raw) != `[{"status":200}]`+"\n" {
		t.Fatalf("all published: %d %s", code, raw)
	}
}

// TestPublishRateLimitPerKey: each key has its own bucket, counted in messages; a batch larger than the
// burst can never pass and says so.
func TestPublishRateLimitPerKey(t *testing.T) {
	pb := startPublishBroker(t, "  publish_rate_limit: {per_second: 0.01, burst: 3}")
	one := `{"topic": "notifications/a"}`
	if code, _, raw := pb.post(t, testNotifyKey, "["+one+","+one+"]"); code != 200 {
		t.Fatalf("%d %s", code, raw)
	}
	if code, _, raw := pb.post(t, testNotifyKey, one); code != 200 {
		t.Fatalf("%d %s", code, raw)
	}
	code, h, raw := pb.post(t, testNotifyKey, one)
	if code != 429 || errorCode(raw) != "rate_limited" || h.Get("Retry-After") == "" {
		t.Fatalf("over the limit: %d %s Retry-After=%q", code, raw, h.Get("Retry-After"))
	}
	if code, _, raw := pb.post(t, testOtherKey, `{"topic": "other/a"}`); code != 200 {
		t.Fatalf("another key: %d %s", code, raw)
	}
	code, h, raw = pb.post(t, testAdminKey, "["+one+","+one+","+one+","+one+"]")
	if code != 429 || !strings.Contains(string(raw), "burst") || h.Get("Retry-After") != "" {
		t.Fatalf("batch above the burst: %d %s", code, raw)
	}
	if got := counterValue(t, pb.publish.total.WithLabelValues(resultRateLimited)); got != 2 {
		t.Fatalf("rate_limited counted %v", got)
	}
	if got := counterValue(t, pb.publish.total.WithLabelValues(resultPublished)); got != 4 {
		t.Fatalf("published counted %v", got)
	}
}

// TestPublishKeysFollowReload: a reload adds, removes and re-scopes publish keys without a restart.
func TestPublishKeysFollowReload(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/idmq.yaml"
	write := func(keys string) {
		t.Helper()
		yaml := "data_dir: " + dir + `
listeners: [{type: tcp, address: "127.0.0.1:0"}]
http: {address: "127.0.0.1:0", publish_keys: [` + keys + `]}
auth: {providers: [{name: local, type: local}]}
`
		if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(`{key: ` + testNotifyKey + `, topics: ["notifications/#"]}`)
	cfg, err := LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b := startBroker(t, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	pb := &publishBroker{Broker: b, api: "http://" + b.Addresses()["http"]}
	if code, _, raw := pb.post(t, testNotifyKey, `{"topic": "notifications/a"}`); code != 200 {
		t.Fatalf("before reload: %d %s", code, raw)
	}
	write(`{key: ` + testOtherKey + `, topics: ["notifications/#"]}, {key: ` + testNotifyKey + `, topics: ["alerts/#"]}`)
	if _, err := b.Reload(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		key, topic string
		status     int
	}{{testNotifyKey, "notifications/a", 403}, {testNotifyKey, "alerts/a", 200}, {testOtherKey, "notifications/a", 200}} {
		if code, _, raw := pb.post(t, c.key, `{"topic": "`+c.topic+`"}`); code != c.status {
			t.Fatalf("after reload, %s: %d %s, want %d", c.topic, code, raw, c.status)
		}
	}
}

// TestPublishClusteredWaitsForTheCluster: on a cluster node a QoS 1 publish reaches a local subscriber once
// (routed to the stream, not delivered again from it); once the node has lost the cluster, a QoS 1 publish
// answers 503 and is not delivered.
func TestPublishClusteredWaitsForTheCluster(t *testing.T) {
	yaml := "data_dir: " + t.TempDir() + `
listeners: [{type: tcp, address: "127.0.0.1:0"}]
http: {address: "127.0.0.1:0", admin_keys: [` + testAdminKey + `]}
auth: {providers: [{name: local, type: local}]}
acl: {rules: [{topic: "users/%u/#", access: pubsub}]}
cluster: {node: solo}
`
	cfg, err := Parse([]byte(yaml), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b := startBroker(t, cfg, slog.New(slog.DiscardHandler))
	pb := &publishBroker{Broker: b, api: "http://" + b.Addresses()["http"]}
	sub := pb.subscriber(t, "alice", "users/alice/#")
	if code, _, raw := pb.post(t, testAdminKey, `{"topic": "users/alice/a", "payload": "once", "qos": 1}`); code != 200 {
		t.Fatalf("%d %s", code, raw)
	}
	if m := sub.Next(t, 5*time.Second); string(m.Payload) != "once" {
		t.Fatalf("got %q", m.Payload)
	}
	select {
	case m := <-sub.Received:
		t.Fatalf("delivered again: %q", m.Payload)
	case <-time.After(500 * time.Millisecond):
	}

	_ = b.cluster.c.Close()
	code, _, raw := pb.post(t, testAdminKey, `{"topic": "users/alice/a", "payload": "lost", "qos": 1}`)
	if c := errorCode(raw); code != 503 || (c != "publish_failed" && c != "unavailable") {
		t.Fatalf("without the cluster: %d %s", code, raw)
	}
	// Past the readiness check (a node that loses the cluster mid-request): the cluster hook refuses the
	// first message of a batch, and the rest is not tried.
	msg := []byte(`{"topic": "users/alice/a", "payload": "lost", "qos": 1}`)
	res := pb.publish.publishAll(publishCaller{admin: true}, "$idmq-http", [][]byte{msg, msg, msg}, "test")
	if res[0].Status != 503 || res[0].Error != "publish_failed" || res[1].Error != "not_attempted" || res[2].Error != "not_attempted" {
		t.Fatalf("refused by the cluster hook: %+v", res)
	}
	select {
	case m := <-sub.Received:
		t.Fatalf("a message the cluster did not take was delivered: %q", m.Payload)
	case <-time.After(300 * time.Millisecond):
	}
}

// TestPublisherClientIDIsReserved: an MQTT client presenting http.publisher_client_id is refused (0x85), with
// valid credentials, so No Local and the cluster never mistake the HTTP publisher's messages for a client's.
func TestPublisherClientIDIsReserved(t *testing.T) {
	pb := startPublishBroker(t, "")
	tok, err := pb.auth.LocalIssuer().Mint("alice", time.Hour, nil, authhook.TopicGrants{})
	if err != nil {
		t.Fatal(err)
	}
	_, ack, err := testkit.ConnectV5(t, testkit.DialTCP(t, pb.Addresses()["tcp0"]), testkit.JWTConnect(defaultPublisherClientID, "alice", tok))
	if err == nil || ack == nil || ack.ReasonCode != 0x85 {
		t.Fatalf("CONNECT as %q: connack %+v, err %v; want 0x85", defaultPublisherClientID, ack, err)
	}
	if _, _, err := testkit.ConnectV5(t, testkit.DialTCP(t, pb.Addresses()["tcp0"]), testkit.JWTConnect("alice-1", "alice", tok)); err != nil {
		t.Fatalf("another client id with the same token: %v", err)
	}
}

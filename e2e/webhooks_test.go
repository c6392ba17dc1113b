package e2e

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/idmq/idmq/internal/testkit"
)

// webhookSecret reaches the config through ${IDMQ_E2E_WEBHOOK_SECRET}, as a real secret would.
const webhookSecret = "whsec-e2e-0123456789abcdef"

const webhookConfig = `
listeners: [{type: tcp, address: "127.0.0.1:{{tcp}}"}]
http:
  address: "127.0.0.1:{{http}}"
  admin_keys: ["admin-key-0123456789abcdef"]
auth:
  leeway: 1s
  providers: [{name: local, type: local}]
acl:
  rules:
    - {topic: "users/%u/#", access: pubsub}
events:
  webhooks:
    - url: "{{webhook}}"
      insecure_http: true
      secret: "${IDMQ_E2E_WEBHOOK_SECRET}"
      timeout: 2s
`

func startWithWebhook(t *testing.T, url string) *idmqProc {
	t.Helper()
	t.Setenv("IDMQ_E2E_WEBHOOK_SECRET", webhookSecret)
	p := newIdmq(t, strings.ReplaceAll(webhookConfig, "{{webhook}}", url))
	p.start()
	return p
}

// TestWebhooksTellAClientsLife: connect, in-place AUTH refresh, expiry (0xA0), reconnect, revocation (0x98),
// refused reconnect: each reaches the receiver, signed, in order, with who and why, and never a token.
func TestWebhooksTellAClientsLife(t *testing.T) {
	r := newHookReceiver(t)
	p := startWithWebhook(t, r.url())
	const id = "alice-phone"
	tokens := []string{p.token("alice", "--ttl", "1m"), p.token("alice", "--ttl", "2s")}

	c, ca := connectV5(t, dialV5(t, p, "tcp", nil), testkit.JWTConnect(id, "alice", tokens[0]))
	if c == nil {
		t.Fatalf("CONNACK 0x%02x", ca.ReasonCode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	ar, err := c.Authenticate(ctx, &paho.Auth{ReasonCode: 0x19, Properties: &paho.AuthProperties{AuthMethod: "JWT", AuthData: []byte(tokens[1])}})
	cancel()
	if err != nil || !ar.Success {
		t.Fatalf("re-authentication: %+v %v", ar, err)
	}
	if d := c.NextDisconnect(t, 10*time.Second); d.ReasonCode != 0xA0 {
		t.Fatalf("DISCONNECT 0x%02x, want 0xA0 at the refreshed token's expiry", d.ReasonCode)
	}
	// The next connection's events are ordered after these only once idmq has seen this one end.
	r.waitFor(t, 10*time.Second, id, 4)

	tokens = append(tokens, p.token("alice", "--ttl", "1m"))
	c, ca = connectV5(t, dialV5(t, p, "tcp", nil), testkit.JWTConnect(id, "alice", tokens[2]))
	if c == nil {
		t.Fatalf("CONNACK 0x%02x", ca.ReasonCode)
	}
	if code, body := p.admin(t, "POST", "/v1/revocations", "admin-key-0123456789abcdef", `{"username": "alice"}`); code != 200 || body["disconnected"] != float64(1) {
		t.Fatalf("revocation: %d %v", code, body)
	}
	if d := c.NextDisconnect(t, 5*time.Second); d.ReasonCode != 0x98 {
		t.Fatalf("DISCONNECT 0x%02x, want 0x98 on revocation", d.ReasonCode)
	}
	r.waitFor(t, 10*time.Second, id, 7)
	if c, _ := connectV5(t, dialV5(t, p, "tcp", nil), testkit.JWTConnect(id, "alice", tokens[2])); c != nil {
		t.Fatal("a revoked token connected")
	}

	seq := r.waitFor(t, 10*time.Second, id, 8)
	want := []string{"client.connected", "client.token_refreshed", "client.token_expired:0xa0", "client.disconnected:0xa0",
		"client.connected", "session.revoked:0x98", "client.disconnected:0x98", "auth.failed:0x86"}
	if !slices.Equal(seq, want) {
		t.Fatalf("events for %s:\n got %v\nwant %v", id, seq, want)
	}
	for _, e := range unique(t, r.events()) {
		for _, tok := range tokens {
			if strings.Contains(e.raw, tok) || strings.Contains(e.raw, strings.Split(tok, ".")[2]) {
				t.Fatalf("an event carries a token: %s", e.raw)
			}
		}
		if e.Time == "" || e.Node == "" || len(e.ID) != 26 || e.RemoteAddr == "" || e.Provider != "local" {
			t.Fatalf("event lacks time, node, id, remote address or provider: %s", e.raw)
		}
		if e.Type != "auth.failed" && e.Username != "alice" {
			t.Fatalf("event without the verified username: %s", e.raw)
		}
		if e.Type == "auth.failed" && (e.Reason != "token_revoked" || e.Username != "") {
			t.Fatalf("auth.failed: %s; want reason token_revoked and no (unverified) username", e.raw)
		}
	}
	if v, _ := p.metric(`idmq_webhook_deliveries_total{result="delivered",webhook="` + strings.TrimSuffix(r.url(), "") + `"}`); v != "8" {
		t.Fatalf("delivered counter %q, want 8", v)
	}
}

// clientLife is one v5 client's connect, three in-place refreshes and clean disconnect, plus a refused
// CONNECT under "<id>-bad": the events each client id must see, in this order.
func clientLife(t *testing.T, p *idmqProc, id string, tokens []string) {
	c, ca := connectV5(t, dialV5(t, p, "tcp", nil), testkit.JWTConnect(id, "alice", tokens[0]))
	if c == nil {
		t.Errorf("%s: CONNACK 0x%02x", id, ca.ReasonCode)
		return
	}
	for i := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ar, err := c.Authenticate(ctx, &paho.Auth{ReasonCode: 0x19, Properties: &paho.AuthProperties{AuthMethod: "JWT", AuthData: []byte(tokens[1+i%2])}})
		cancel()
		if err != nil || !ar.Success {
			t.Errorf("%s: re-authentication %d: %+v %v", id, i, ar, err)
			return
		}
	}
	_ = c.Disconnect(&paho.Disconnect{})
	if c, _ := connectV5(t, dialV5(t, p, "tcp", nil), testkit.JWTConnect(id+"-bad", "", "not-a-jwt")); c != nil {
		t.Errorf("%s-bad: a garbage token connected", id)
	}
}

var lifeEvents = []string{"client.connected", "client.token_refreshed", "client.token_refreshed", "client.token_refreshed", "client.disconnected"}

// TestWebhooksSurviveAReceiverOutage: with the receiver down for 20 s, every event of 8 clients' lives is
// delivered once it is back, in order per client, nothing lost; the first answers after the outage are lost
// (503 after processing), and those events come again with the same id and body.
func TestWebhooksSurviveAReceiverOutage(t *testing.T) {
	r := newHookReceiver(t)
	p := startWithWebhook(t, r.url())
	tokens := []string{p.token("alice", "--ttl", "5m"), p.token("alice", "--ttl", "5m"), p.token("alice", "--ttl", "6m")}

	r.down()
	downAt := time.Now()
	var wg sync.WaitGroup
	ids := make([]string, 8)
	for i := range ids {
		ids[i] = fmt.Sprintf("outage-%d", i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			clientLife(t, p, ids[i], tokens)
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	testkit.Eventually(t, 10*time.Second, func() bool {
		v, _ := p.metric(`idmq_webhook_deliveries_total{result="failed",webhook="` + r.url() + `"}`)
		return v != "" && v != "0"
	}, "failed delivery attempts while the receiver is down")
	time.Sleep(20*time.Second - time.Since(downAt))
	if n := len(r.events()); n != 0 {
		t.Fatalf("%d events arrived while the receiver was down", n)
	}
	r.mu.Lock()
	r.loseAnswers = 5
	r.mu.Unlock()
	r.up()

	// Backoff is capped at 30 s: a wait begun during the outage, then one after a lost answer, then delivery.
	want := len(ids) * (len(lifeEvents) + 1)
	testkit.Eventually(t, 90*time.Second, func() bool { return len(unique(t, r.events())) >= want }, "%d events after the outage", want)
	got := unique(t, r.events())
	if len(got) != want {
		t.Fatalf("%d distinct events, want %d", len(got), want)
	}
	for _, id := range ids {
		if seq := types(got, id); !slices.Equal(seq, lifeEvents) {
			t.Fatalf("%s: %v, want %v", id, seq, lifeEvents)
		}
		if seq := types(got, id+"-bad"); !slices.Equal(seq, []string{"auth.failed"}) {
			t.Fatalf("%s-bad: %v, want [auth.failed]", id, seq)
		}
	}
	if all := len(r.events()); all < want+5 {
		t.Fatalf("%d requests accepted, want %d: the 5 events whose answer was lost were not sent again", all, want+5)
	}
	t.Logf("%d events delivered after a 20 s outage (%d requests, duplicates included)", len(got), len(r.events()))
}

// connectLatency is the time from dialling to the CONNACK of one v5 client with a (cached) token.
func connectLatency(t *testing.T, p *idmqProc, id, token string) time.Duration {
	start := time.Now()
	c, ca := connectV5(t, dialV5(t, p, "tcp", nil), testkit.JWTConnect(id, "alice", token))
	took := time.Since(start)
	if c == nil {
		t.Fatalf("%s: CONNACK 0x%02x", id, ca.ReasonCode)
	}
	_ = c.Disconnect(&paho.Disconnect{})
	return took
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// TestWebhooksDoNotSlowConnects: 300 CONNECTs to a broker whose webhook receiver hangs take no longer, by
// median, than 1.2x the same to a broker without webhooks, measured in the same run, alternately.
func TestWebhooksDoNotSlowConnects(t *testing.T) {
	off := newIdmq(t, webhookConfig[:strings.Index(webhookConfig, "events:")])
	off.start()
	hole := blackhole(t)
	dead := startWithWebhook(t, hole)
	tokens := map[*idmqProc]string{off: off.token("alice", "--ttl", "10m"), dead: dead.token("alice", "--ttl", "10m")}
	lat := map[*idmqProc][]time.Duration{}
	for i := range 20 { // warm up: cache the tokens, grow the pools
		connectLatency(t, off, fmt.Sprint("warm-", i), tokens[off])
		connectLatency(t, dead, fmt.Sprint("warm-", i), tokens[dead])
	}
	// Alternating connect by connect (and which goes first), so a burst of load from other processes falls on
	// both alike.
	const connects = 300
	for i := range connects {
		order := []*idmqProc{off, dead}
		if i%2 == 1 {
			order[0], order[1] = dead, off
		}
		for _, p := range order {
			lat[p] = append(lat[p], connectLatency(t, p, fmt.Sprint("storm-", i), tokens[p]))
		}
	}
	mOff, mDead := median(lat[off]), median(lat[dead])
	ratio := float64(mDead) / float64(mOff)
	t.Logf("median CONNECT latency over %d connects: webhooks off %s, webhook to a hanging receiver %s: ratio %.2f",
		connects, mOff, mDead, ratio)
	if v, _ := dead.metric(`idmq_webhook_queue_depth{webhook="` + hole + `"}`); v == "" || v == "0" {
		t.Fatalf("queue depth %q: the events were not waiting for the hanging receiver", v)
	}
	if ratio > 1.2 {
		t.Fatalf("CONNECTs are %.2fx slower with a hanging webhook receiver (limit 1.2x)", ratio)
	}
}

// TestWebhookEventsSurviveAKill: events queued for a receiver that is down are in the bolt store; after
// kill -9 and a restart, the receiver (back up) gets every one of them, in order per client.
func TestWebhookEventsSurviveAKill(t *testing.T) {
	r := newHookReceiver(t)
	r.down()
	p := startWithWebhook(t, r.url())
	tokens := []string{p.token("alice", "--ttl", "5m"), p.token("alice", "--ttl", "5m"), p.token("alice", "--ttl", "6m")}
	ids := []string{"kill-0", "kill-1", "kill-2"}
	for _, id := range ids {
		clientLife(t, p, id, tokens)
	}
	if t.Failed() {
		return
	}
	want := len(ids) * (len(lifeEvents) + 1)
	testkit.Eventually(t, 10*time.Second, func() bool {
		v, _ := p.metric(`idmq_webhook_queue_depth{webhook="` + r.url() + `"}`)
		return v == strconv.Itoa(want)
	}, "%d events queued", want)
	time.Sleep(500 * time.Millisecond) // the store commits within 50 ms of an event
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited

	r.up()
	p.start()
	if !p.waitLog("events: undelivered events restored", 10*time.Second) {
		t.Fatal("the restarted broker restored no events")
	}
	testkit.Eventually(t, 30*time.Second, func() bool { return len(unique(t, r.events())) >= want }, "%d events after the restart", want)
	got := unique(t, r.events())
	if len(got) != want {
		t.Fatalf("%d distinct events, want %d", len(got), want)
	}
	for _, id := range ids {
		if seq := types(got, id); !slices.Equal(seq, lifeEvents) {
			t.Fatalf("%s: %v, want %v", id, seq, lifeEvents)
		}
	}
}

package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt3 "github.com/eclipse/paho.mqtt.golang"
)

// TestQoS1FanInToClientWithReceiveMaximum: a v5 subscriber that announces a Receive Maximum gets every
// QoS 1 message from many concurrent publishers. On mochi v2.7.9 as shipped, this load deadlocks the
// subscriber's connection (a recursive read lock in Inflight.NextImmediate meets a waiting writer).
func TestQoS1FanInToClientWithReceiveMaximum(t *testing.T) {
	p := newIdmq(t, `
listeners: [{type: tcp, address: "127.0.0.1:{{tcp}}"}]
http: {address: "127.0.0.1:{{http}}"}
mqtt: {max_inflight: 65535}   # room for every message: any shortfall is a stuck connection, not a full queue
auth: {providers: [{name: local, type: local}]}
acl: {rules: [{topic: "users/%u/#", access: pubsub}]}
`)
	p.start()
	tok := p.token("alice")
	recvMax := uint16(100)
	sub, ca := connectV5(t, dialV5(t, p, "tcp", nil), &paho.Connect{ClientID: "rm-sub", CleanStart: true,
		Username: "alice", UsernameFlag: true, Password: []byte(tok), PasswordFlag: true,
		Properties: &paho.ConnectProperties{ReceiveMaximum: &recvMax}})
	if sub == nil {
		t.Fatalf("CONNACK 0x%02x", ca.ReasonCode)
	}
	if _, err := sub.Subscribe(context.Background(), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "users/alice/in/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	const publishers, each = 20, 200
	var wg sync.WaitGroup
	for i := 0; i < publishers; i++ {
		pub, _ := connectV5(t, dialV5(t, p, "tcp", nil), &paho.Connect{ClientID: fmt.Sprintf("rm-pub-%d", i), CleanStart: true,
			Username: "alice", UsernameFlag: true, Password: []byte(tok), PasswordFlag: true})
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for j := 0; j < each; j++ {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				_, err := pub.Publish(ctx, &paho.Publish{Topic: fmt.Sprintf("users/alice/in/%d", i), QoS: 1, Payload: []byte{byte(j)}})
				cancel()
				if err != nil {
					t.Errorf("publisher %d message %d: %v", i, j, err)
					return
				}
			}
		}(i)
	}
	got := 0
	deadline := time.After(60 * time.Second)
	for got < publishers*each {
		select {
		case <-sub.Received:
			got++
		case <-deadline:
			t.Fatalf("subscriber received %d of %d QoS 1 messages: its connection is stuck", got, publishers*each)
		}
	}
	wg.Wait()
}

// slowSubscriberBroker runs a broker with a small in-flight window, so that a subscriber falls behind it
// within a test's few hundred messages. wait is mqtt.slow_subscriber_wait. The memory store keeps the
// publisher fast: bolt commits each stored delivery with an fsync, which paces publishers below the
// subscriber these tests need to outrun.
func slowSubscriberBroker(t *testing.T, wait string) *idmqProc {
	p := newIdmq(t, `
listeners: [{type: tcp, address: "127.0.0.1:{{tcp}}"}]
http: {address: "127.0.0.1:{{http}}"}
storage: {type: memory}
mqtt: {max_inflight: 64, slow_subscriber_wait: `+wait+`}
auth: {providers: [{name: local, type: local}]}
acl: {rules: [{topic: "users/%u/#", access: pubsub}]}
`)
	p.start()
	return p
}

// publishAll publishes n QoS 1 messages (payload = index) as fast as paho sends them and waits for every
// PUBACK.
func publishAll(t *testing.T, pub mqtt3.Client, topic string, n int) {
	t.Helper()
	toks := make([]mqtt3.Token, n)
	for i := range toks {
		toks[i] = pub.Publish(topic, 1, false, fmt.Sprint(i))
	}
	for i, tok := range toks {
		waitToken(t, tok, fmt.Sprintf("publish %d", i))
	}
}

// TestQoS1SlowSubscriberLosesNothing: a subscriber that handles its messages slower than a publisher
// sends them gets every QoS 1 message: the publisher is held while the subscriber's window is full,
// instead of the broker dropping what does not fit. With slow_subscriber_wait: 0 (the control) the same
// load loses messages, which is what mochi does on its own.
func TestQoS1SlowSubscriberLosesNothing(t *testing.T) {
	const messages = 600
	for _, tc := range []struct {
		wait     string
		lossless bool
	}{{"5s", true}, {"0s", false}} {
		t.Run("wait="+tc.wait, func(t *testing.T) {
			p := slowSubscriberBroker(t, tc.wait)
			tok := p.token("alice")
			seen := make(map[string]bool)
			var mu sync.Mutex
			got := make(chan struct{}, messages)
			// OrderMatters: paho calls the handler in its reader and acknowledges after it returns, so a
			// slow handler is a slow reader, as an application that does work per message is.
			sub, _ := connectV3(t, v3Options(p.brokerURL("tcp"), "slow-sub", "alice", tok, nil).SetOrderMatters(true))
			if sub == nil {
				t.Fatal("subscriber refused")
			}
			waitToken(t, sub.Subscribe("users/alice/feed", 1, func(_ mqtt3.Client, m mqtt3.Message) {
				time.Sleep(4 * time.Millisecond)
				mu.Lock()
				seen[string(m.Payload())] = true
				mu.Unlock()
				got <- struct{}{}
			}), "subscribe")
			pub, _ := connectV3(t, v3Options(p.brokerURL("tcp"), "fast-pub", "alice", tok, nil))
			if pub == nil {
				t.Fatal("publisher refused")
			}
			pubStart := time.Now()
			publishAll(t, pub, "users/alice/feed", messages)
			t.Logf("published in %v", time.Since(pubStart))

			// Everything the broker did not drop arrives; wait until the counts add up.
			deadline := time.Now().Add(30 * time.Second)
			for {
				mu.Lock()
				n := len(seen)
				mu.Unlock()
				dropped := scrapeInt(t, p, "idmq_inflight_dropped_total")
				if n+int(dropped) >= messages || time.Now().After(deadline) {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			mu.Lock()
			distinct := len(seen)
			mu.Unlock()
			dropped := scrapeInt(t, p, "idmq_inflight_dropped_total")
			waits := scrapeInt(t, p, "idmq_publisher_waits_total")
			t.Logf("received %d of %d, dropped %d, publisher waits %d", distinct, messages, dropped, waits)
			if tc.lossless {
				if distinct != messages || dropped != 0 {
					t.Fatalf("received %d of %d QoS 1 messages, broker dropped %d", distinct, messages, dropped)
				}
				if waits == 0 {
					t.Fatal("the subscriber never fell behind: the test did not exercise flow control")
				}
				if slow := scrapeInt(t, p, "idmq_slow_subscribers_total"); slow != 0 {
					t.Fatalf("a subscriber that keeps acknowledging was marked slow %d times", slow)
				}
			} else if dropped == 0 || distinct == messages {
				t.Fatalf("control: without flow control the slow subscriber should lose messages, got %d of %d (dropped %d)", distinct, messages, dropped)
			}
		})
	}
}

// TestStalledSubscriberCostsPublishersOneWait: a subscriber that never acknowledges holds its publishers
// up once, for slow_subscriber_wait; then it is marked slow (metric, log line), its overflow is dropped
// and no publisher waits for it again — also not a second publisher.
func TestStalledSubscriberCostsPublishersOneWait(t *testing.T) {
	p := slowSubscriberBroker(t, "1s")
	tok := p.token("alice")
	sub, _ := connectV3(t, v3Options(p.brokerURL("tcp"), "stalled-sub", "alice", tok, nil).SetAutoAckDisabled(true))
	if sub == nil {
		t.Fatal("subscriber refused")
	}
	waitToken(t, sub.Subscribe("users/alice/feed", 1, func(mqtt3.Client, mqtt3.Message) {}), "subscribe")

	for i, id := range []string{"pub-1", "pub-2"} {
		pub, _ := connectV3(t, v3Options(p.brokerURL("tcp"), id, "alice", tok, nil))
		if pub == nil {
			t.Fatal("publisher refused")
		}
		start := time.Now()
		publishAll(t, pub, "users/alice/feed", 200)
		took := time.Since(start)
		waits := scrapeInt(t, p, "idmq_publisher_waits_total")
		slow := scrapeInt(t, p, "idmq_slow_subscribers_total")
		t.Logf("%s: 200 publishes acknowledged in %v; waits %d, slow subscribers %d", id, took, waits, slow)
		if waits != 1 || slow != 1 {
			t.Fatalf("after publisher %d: %d waits and %d slow subscribers, want 1 and 1", i+1, waits, slow)
		}
		if i == 0 && took < time.Second {
			t.Fatalf("the first publisher was not held (%v) although the subscriber's window was full", took)
		}
	}
	if dropped := scrapeInt(t, p, "idmq_inflight_dropped_total"); dropped == 0 {
		t.Fatal("a subscriber that never acknowledges got 400 messages into a 64-message window")
	}
	if !p.waitLog(`subscriber is not keeping up`, time.Second) || !strings.Contains(p.logs.String(), "client=stalled-sub") {
		t.Fatal("no log line names the slow subscriber")
	}
}

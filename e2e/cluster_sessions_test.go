package e2e

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/idmq/idmq/internal/testkit"
)

// sessionClient connects alice's client id to p, MQTT 5 with a session expiry of one hour.
func sessionClient(t *testing.T, p *idmqProc, id string, clean bool) (*testkit.V5Client, *paho.Connack) {
	t.Helper()
	expiry := uint32(3600)
	c, ca := connectV5(t, dialV5(t, p, "tcp", nil), &paho.Connect{ClientID: id, CleanStart: clean,
		Username: "alice", UsernameFlag: true, Password: []byte(p.token("alice")), PasswordFlag: true,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
	if c == nil {
		t.Fatalf("%s refused: CONNACK 0x%02x", id, ca.ReasonCode)
	}
	return c, ca
}

// receiveInOrder reads n messages and checks that their payloads are 0..n-1 in order, once each.
func receiveInOrder(t *testing.T, c *testkit.V5Client, n int, within time.Duration) {
	t.Helper()
	deadline := time.After(within)
	for i := 0; i < n; i++ {
		select {
		case p := <-c.Received:
			if string(p.Payload) != strconv.Itoa(i) {
				t.Fatalf("message %d: got %q (lost, duplicated or out of order)", i, p.Payload)
			}
		case <-deadline:
			t.Fatalf("received %d of %d within %s", i, n, within)
		}
	}
	select {
	case p := <-c.Received:
		t.Fatalf("unexpected message after the queue: %q", p.Payload)
	case <-time.After(time.Second):
	}
}

// TestClusterSessionMovesWithQueue: a persistent session goes offline on A; 5,000 QoS 1 messages are published
// on C meanwhile; the client reconnects to B with clean_start=false, is told its session is present, and gets
// all of them in order, none twice, then live messages. The same for an MQTT 3.1.1 client (clean session 0).
func TestClusterSessionMovesWithQueue(t *testing.T) {
	nodes := startIdmqCluster(t)
	a, b, c := nodes[0], nodes[1], nodes[2]

	sub, _ := sessionClient(t, a, "mover", true)
	subscribe(t, sub, "users/alice/q/#", 1)
	v3url := func(p *idmqProc) string { return "tcp://" + p.addr("tcp") }
	v3got := make(chan string, 1000)
	v3opts := func(p *idmqProc) *mqtt3.ClientOptions {
		return testkit.V3Options(v3url(p), "mover-v3", "alice", p.token("alice")).SetCleanSession(false).
			SetOrderMatters(true).SetDefaultPublishHandler(func(_ mqtt3.Client, m mqtt3.Message) { v3got <- string(m.Payload()) })
	}
	v3, code := connectV3(t, v3opts(a))
	if v3 == nil {
		t.Fatalf("3.1.1 client refused: 0x%02x", code)
	}
	if tok := v3.Subscribe("users/alice/v3/#", 1, nil); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("3.1.1 subscribe: %v", tok.Error())
	}
	if err := sub.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatal(err)
	}
	v3.Disconnect(100)

	pub := clusterClient(t, c, "pub-c")
	const n = 5000
	start := time.Now()
	for i := range n {
		if _, err := pub.Publish(context.Background(), &paho.Publish{Topic: "users/alice/q/x", QoS: 1, Payload: []byte(strconv.Itoa(i))}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	for i := range 100 {
		if _, err := pub.Publish(context.Background(), &paho.Publish{Topic: "users/alice/v3/x", QoS: 1, Payload: []byte(strconv.Itoa(i))}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	t.Logf("published %d messages on C in %s", n+100, time.Since(start))

	start = time.Now()
	moved, ca := sessionClient(t, b, "mover", false)
	if !ca.SessionPresent {
		t.Fatal("CONNACK on B: session present = false, want true")
	}
	receiveInOrder(t, moved, n, 2*time.Minute)
	t.Logf("B replayed %d messages in %s", n, time.Since(start))
	if _, err := pub.Publish(context.Background(), &paho.Publish{Topic: "users/alice/q/live", QoS: 1, Payload: []byte("live")}); err != nil {
		t.Fatal(err)
	}
	if p := moved.Expect(t, "users/alice/q/live", 10*time.Second); string(p.Payload) != "live" {
		t.Fatalf("live message: %q", p.Payload)
	}

	v3moved, code := connectV3(t, v3opts(c))
	if v3moved == nil {
		t.Fatalf("3.1.1 client refused on C: 0x%02x", code)
	}
	for i := range 100 {
		select {
		case got := <-v3got:
			if got != strconv.Itoa(i) {
				t.Fatalf("3.1.1 message %d: got %q", i, got)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("3.1.1 client received %d of 100", i)
		}
	}
}

// TestClusterSessionSubscriberNodeKilled: the node of a persistent subscriber is killed (SIGKILL) while
// messages flow; the subscriber reconnects to another node with clean_start=false and receives every message
// whose publish was acknowledged. QoS 1 and QoS 2; duplicates (messages after the session's last stored cursor,
// received before the kill) are reported, not failed: across a node's death delivery is at least once.
func TestClusterSessionSubscriberNodeKilled(t *testing.T) {
	for _, qos := range []byte{1, 2} {
		t.Run(fmt.Sprintf("qos%d", qos), func(t *testing.T) {
			nodes := startIdmqCluster(t)
			a, b, c := nodes[0], nodes[1], nodes[2]
			sub, _ := sessionClient(t, a, "victim", true)
			subscribe(t, sub, "users/alice/k/#", qos)

			var mu sync.Mutex
			received := map[string]int{}
			drainInto := func(cl *testkit.V5Client, stop <-chan struct{}) {
				for {
					select {
					case p := <-cl.Received:
						mu.Lock()
						received[string(p.Payload)]++
						mu.Unlock()
					case <-stop:
						return
					}
				}
			}
			stopFirst := make(chan struct{})
			go drainInto(sub, stopFirst)

			acked := make(chan []string, 1)
			killAt := make(chan struct{})
			go func() { acked <- publishThroughKill(t, c, qos, killAt) }()
			time.Sleep(3 * time.Second) // load flowing
			if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			<-a.exited
			close(killAt)
			waitReady(t, b, 20*time.Second)
			close(stopFirst)

			// A client that loses its node reconnects to another with clean_start=false, and again whenever the
			// connection ends (B refuses with 0x88 until the buckets A led have new leaders).
			stopSecond := make(chan struct{})
			var reconnecting sync.WaitGroup
			defer func() { close(stopSecond); reconnecting.Wait() }()
			presentOnce := make(chan bool, 1)
			reconnecting.Go(func() {
				token, expiry := b.token("alice"), uint32(3600)
				for {
					select {
					case <-stopSecond:
						return
					default:
					}
					c, ca, err := testkit.ConnectV5(t, dialV5(t, b, "tcp", nil), &paho.Connect{ClientID: "victim", CleanStart: false,
						Username: "alice", UsernameFlag: true, Password: []byte(token), PasswordFlag: true,
						Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
					if err != nil {
						time.Sleep(250 * time.Millisecond)
						continue
					}
					select {
					case presentOnce <- ca.SessionPresent:
					default:
					}
					stopThis := make(chan struct{})
					go drainInto(c, stopThis)
					select {
					case <-c.Done():
						t.Log("the resumed subscriber's connection ended; reconnecting")
					case <-stopSecond:
					}
					close(stopThis)
				}
			})
			select {
			case present := <-presentOnce:
				if !present {
					t.Error("CONNACK on B after the kill: session present = false")
				}
			case <-time.After(40 * time.Second):
				t.Fatal("the subscriber could not reconnect to B within 40s of the kill")
			}
			ok := <-acked
			deadline := time.Now().Add(60 * time.Second)
			for {
				mu.Lock()
				lost, dups := 0, 0
				for _, p := range ok {
					if received[p] == 0 {
						lost++
					}
				}
				for _, k := range received {
					dups += max(0, k-1)
				}
				mu.Unlock()
				if lost == 0 {
					t.Logf("QoS %d: %d acknowledged publishes, all received; %d duplicates", qos, len(ok), dups)
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("QoS %d: %d of %d acknowledged messages never received", qos, lost, len(ok))
				}
				time.Sleep(200 * time.Millisecond)
			}
		})
	}
}

// publishThroughKill publishes numbered messages on p until 3s after killAt closes, reconnecting when the
// cluster refuses one (a publish JetStream did not take ends the connection unacknowledged), and returns the
// payloads whose publish was acknowledged.
func publishThroughKill(t *testing.T, p *idmqProc, qos byte, killAt <-chan struct{}) []string {
	var ok []string
	var stopAt time.Time
	var pub *testkit.V5Client
	token := p.token("alice")
	for i := 0; ; i++ {
		select {
		case <-killAt:
			if stopAt.IsZero() {
				stopAt = time.Now().Add(3 * time.Second)
			}
		default:
		}
		if !stopAt.IsZero() && time.Now().After(stopAt) {
			return ok
		}
		if pub == nil {
			expiry := uint32(0)
			c, _, err := testkit.ConnectV5(t, dialV5(t, p, "tcp", nil), &paho.Connect{ClientID: "pub-kill", CleanStart: true,
				Username: "alice", UsernameFlag: true, Password: []byte(token), PasswordFlag: true,
				Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
			if err != nil {
				time.Sleep(200 * time.Millisecond)
				continue
			}
			pub = c
		}
		payload := strconv.Itoa(i)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := pub.Publish(ctx, &paho.Publish{Topic: "users/alice/k/x", QoS: qos, Payload: []byte(payload)})
		cancel()
		if err != nil {
			_ = pub.Conn.Close()
			pub = nil
			continue
		}
		ok = append(ok, payload)
	}
}

package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
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
		case <-sub.received:
			got++
		case <-deadline:
			t.Fatalf("subscriber received %d of %d QoS 1 messages: its connection is stuck", got, publishers*each)
		}
	}
	wg.Wait()
}

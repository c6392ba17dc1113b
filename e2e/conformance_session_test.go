package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/idmq/idmq/internal/testkit"
)

// nextV5 returns the next message c receives, or nil within d: the tests publish a marker after what must
// not arrive and expect the marker next (messages to one client keep their order).
func nextV5(c *testkit.V5Client, d time.Duration) *paho.Publish {
	select {
	case m := <-c.Received:
		return m
	case <-time.After(d):
		return nil
	}
}

// TestSubscriptionOptionsV5: No Local [MQTT-3.8.3-3], Retain As Published [MQTT-3.3.1-12] [MQTT-3.3.1-13],
// subscription identifiers [MQTT-3.3.4-3] and Retain Handling 0/1/2 [MQTT-3.3.1-9] [MQTT-3.3.1-10]
// [MQTT-3.3.1-11], through paho.golang, with idmq's ACL and fixes in the path.
func TestSubscriptionOptionsV5(t *testing.T) {
	p := newIdmq(t, aclConfig)
	p.start()
	token := p.token("alice")
	connect := func(id string) *testkit.V5Client {
		c, ca := connectV5(t, dialV5(t, p, "tcp", nil), &paho.Connect{ClientID: id, CleanStart: true,
			Username: "alice", UsernameFlag: true, Password: []byte(token), PasswordFlag: true})
		if c == nil {
			t.Fatalf("%s: CONNACK 0x%02x", id, ca.ReasonCode)
		}
		return c
	}
	ctx := context.Background()
	sub := func(c *testkit.V5Client, id *int, opts ...paho.SubscribeOptions) {
		t.Helper()
		s := &paho.Subscribe{Subscriptions: opts}
		if id != nil {
			s.Properties = &paho.SubscribeProperties{SubscriptionIdentifier: id}
		}
		sa, err := c.Subscribe(ctx, s)
		if err != nil || sa == nil || sa.Reasons[0] >= 0x80 {
			t.Fatalf("subscribe %+v: %+v %v", opts, sa, err)
		}
	}
	pub := func(c *testkit.V5Client, topic string, retain bool) {
		t.Helper()
		if pr, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Retain: retain, Payload: []byte(topic)}); err != nil || pr.ReasonCode != 0 {
			t.Fatalf("publish %s: %+v %v", topic, pr, err)
		}
	}
	expectNext := func(c *testkit.V5Client, topic string) *paho.Publish {
		t.Helper()
		m := nextV5(c, 5*time.Second)
		if m == nil || m.Topic != topic {
			t.Fatalf("next message %+v, want %s", m, topic)
		}
		return m
	}
	a, other := connect("alice-opts"), connect("alice-other")

	t.Run("No Local", func(t *testing.T) {
		sub(a, nil, paho.SubscribeOptions{Topic: "users/alice/nl/#", QoS: 1, NoLocal: true})
		pub(a, "users/alice/nl/own", false)
		pub(other, "users/alice/nl/marker", false)
		expectNext(a, "users/alice/nl/marker")
	})
	t.Run("Retain As Published and subscription identifiers", func(t *testing.T) {
		one, two := 1, 2
		sub(a, &one, paho.SubscribeOptions{Topic: "users/alice/rap/#", QoS: 1, RetainAsPublished: true})
		sub(a, &two, paho.SubscribeOptions{Topic: "users/alice/norap/#", QoS: 1})
		pub(other, "users/alice/rap/x", true)
		m := expectNext(a, "users/alice/rap/x")
		if !m.Retain || m.Properties == nil || m.Properties.SubscriptionIdentifier == nil || *m.Properties.SubscriptionIdentifier != 1 {
			t.Errorf("Retain As Published: retain %v properties %+v, want retain and subscription identifier 1", m.Retain, m.Properties)
		}
		pub(other, "users/alice/norap/x", true)
		m = expectNext(a, "users/alice/norap/x")
		if m.Retain || m.Properties == nil || m.Properties.SubscriptionIdentifier == nil || *m.Properties.SubscriptionIdentifier != 2 {
			t.Errorf("without Retain As Published: retain %v properties %+v, want no retain and subscription identifier 2", m.Retain, m.Properties)
		}
	})
	t.Run("Retain Handling", func(t *testing.T) {
		pub(other, "users/alice/rh/x", true)
		c := connect("alice-rh")
		for _, tc := range []struct {
			name   string
			filter string
			rh     byte
			want   bool
		}{
			{"0 sends retained", "users/alice/rh/#", 0, true},
			{"1 sends on a new subscription", "users/alice/rh/+", 1, true},
			{"1 does not on an existing one", "users/alice/rh/+", 1, false},
			{"2 never sends", "users/alice/+/x", 2, false},
		} {
			sub(c, nil, paho.SubscribeOptions{Topic: tc.filter, QoS: 1, RetainHandling: tc.rh})
			got := nextV5(c, 500*time.Millisecond)
			if (got != nil) != tc.want {
				t.Errorf("Retain Handling %s: received %+v, want retained message: %v", tc.name, got, tc.want)
			}
		}
	})
}

// TestSessionExpiryOnDisconnect: a client may shorten its session at DISCONNECT [MQTT-3.14.2]; with 0 the
// session ends with the connection and nothing is kept for it.
func TestSessionExpiryOnDisconnect(t *testing.T) {
	p := newIdmq(t, aclConfig)
	p.start()
	token := p.token("alice")
	expiry := uint32(300)
	cp := func() *paho.Connect {
		return &paho.Connect{ClientID: "alice-session", Username: "alice", UsernameFlag: true, Password: []byte(token), PasswordFlag: true,
			Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}}
	}
	c, _ := connectV5(t, dialV5(t, p, "tcp", nil), cp())
	if sa, err := c.Subscribe(context.Background(), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "users/alice/s", QoS: 1}}}); err != nil || sa.Reasons[0] != 1 {
		t.Fatalf("subscribe: %+v %v", sa, err)
	}
	zero := uint32(0)
	if err := c.Disconnect(&paho.Disconnect{Properties: &paho.DisconnectProperties{SessionExpiryInterval: &zero}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	other, _ := connectV5(t, dialV5(t, p, "tcp", nil), &paho.Connect{ClientID: "alice-pub", CleanStart: true,
		Username: "alice", UsernameFlag: true, Password: []byte(token), PasswordFlag: true})
	if _, err := other.Publish(context.Background(), &paho.Publish{Topic: "users/alice/s", QoS: 1, Payload: []byte("while away")}); err != nil {
		t.Fatal(err)
	}
	c, ca := connectV5(t, dialV5(t, p, "tcp", nil), cp())
	if ca.SessionPresent {
		t.Errorf("session present after DISCONNECT with Session Expiry Interval 0")
	}
	if m := nextV5(c, time.Second); m != nil {
		t.Errorf("received %s: a session that ended kept a message", m.Topic)
	}
}

// TestWillDelayEndsWithTheSession: the Will waits for its Will Delay Interval or the end of the session,
// whichever comes first [MQTT-3.1.3-9]: with a 1 s session and a 10 s delay it is published at about 1 s.
func TestWillDelayEndsWithTheSession(t *testing.T) {
	p := newIdmq(t, aclConfig)
	p.start()
	token := p.token("alice")
	watcher, _ := connectV5(t, dialV5(t, p, "tcp", nil), &paho.Connect{ClientID: "watcher", CleanStart: true,
		Username: "alice", UsernameFlag: true, Password: []byte(token), PasswordFlag: true})
	if sa, err := watcher.Subscribe(context.Background(), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "users/alice/will", QoS: 1}}}); err != nil || sa.Reasons[0] != 1 {
		t.Fatalf("subscribe: %+v %v", sa, err)
	}
	sessionExpiry, willDelay := uint32(1), uint32(10)
	c, _ := connectV5(t, dialV5(t, p, "tcp", nil), &paho.Connect{ClientID: "mortal", CleanStart: true,
		Username: "alice", UsernameFlag: true, Password: []byte(token), PasswordFlag: true,
		Properties:     &paho.ConnectProperties{SessionExpiryInterval: &sessionExpiry},
		WillMessage:    &paho.WillMessage{Topic: "users/alice/will", QoS: 1, Payload: []byte("gone")},
		WillProperties: &paho.WillProperties{WillDelayInterval: &willDelay}})
	start := time.Now()
	_ = c.Conn.Close() // an end the client did not announce: the Will applies
	m := nextV5(watcher, 8*time.Second)
	if m == nil || m.Topic != "users/alice/will" {
		t.Fatalf("no Will within 8 s (%+v), want it when the 1 s session ends", m)
	}
	if took := time.Since(start); took < 900*time.Millisecond {
		t.Errorf("Will after %v, before the session ended", took)
	}
}

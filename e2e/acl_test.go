package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

const aclConfig = `
listeners: [{type: tcp, address: "127.0.0.1:{{tcp}}"}]
http: {address: "127.0.0.1:{{http}}"}
auth:
  providers:
    - {name: local, type: local, attributes: [role]}
acl:
  rules:
    - {topic: "#", access: pubsub, when: {role: admin}}
    - {topic: "news/internal/#", access: deny}
    - {topic: "users/%u/#", access: pubsub}
    - {topic: "news/#", access: subscribe}
`

// TestACLThroughTheBinary: the rules a user writes in YAML, enforced on real v3 and v5 clients with tokens
// from `idmq token`.
func TestACLThroughTheBinary(t *testing.T) {
	p := newIdmq(t, aclConfig)
	p.start()
	alice, bob, admin := p.token("alice"), p.token("bob"), p.token("root", "--claim", "role=admin")
	url := p.brokerURL("tcp")

	bobGot := newCollectV3()
	bobC, _ := connectV3(t, v3Options(url, "bob", "bob", bob, nil))
	waitToken(t, bobC.Subscribe("users/bob/#", 1, bobGot.handler), "bob subscribe")

	t.Run("alice cannot read bob's topics (v3 SUBACK 0x80)", func(t *testing.T) {
		c, _ := connectV3(t, v3Options(url, "alice-v3", "alice", alice, nil))
		tok := c.Subscribe("users/bob/#", 1, nil)
		waitToken(t, tok, "subscribe")
		if code := tok.(interface{ Result() map[string]byte }).Result()["users/bob/#"]; code != 0x80 {
			t.Fatalf("SUBACK code 0x%02x, want 0x80", code)
		}
	})

	t.Run("alice cannot read (v5 SUBACK 0x87) or write (PUBACK 0x87) bob's topics", func(t *testing.T) {
		c, _ := connectV5(t, dialV5(t, p, "tcp", nil), &paho.Connect{ClientID: "alice-v5", CleanStart: true,
			Username: "alice", UsernameFlag: true, Password: []byte(alice), PasswordFlag: true})
		sa, err := c.Subscribe(context.Background(), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "users/bob/#", QoS: 1}}})
		if sa == nil || len(sa.Reasons) != 1 || sa.Reasons[0] != 0x87 {
			t.Fatalf("SUBACK %+v err %v, want reason 0x87", sa, err)
		}
		pr, _ := c.Publish(context.Background(), &paho.Publish{Topic: "users/bob/inbox", QoS: 1, Payload: []byte("from alice")})
		if pr == nil || pr.ReasonCode != 0x87 {
			t.Fatalf("PUBACK %+v, want 0x87", pr)
		}
		select {
		case m := <-bobGot.ch:
			t.Fatalf("bob received %q from a denied publish", m.Payload())
		case <-time.After(300 * time.Millisecond):
		}
	})

	t.Run("an admin token can write bob's topics", func(t *testing.T) {
		c, code := connectV3(t, v3Options(url, "root", "root", admin, nil))
		if code != 0 {
			t.Fatalf("CONNACK %d", code)
		}
		waitToken(t, c.Publish("users/bob/inbox", 1, false, "from admin"), "admin publish")
		if m := bobGot.expect(t, "users/bob/inbox", 5*time.Second); string(m.Payload()) != "from admin" {
			t.Fatalf("got %q", m.Payload())
		}
	})

	t.Run("retained messages on a forbidden topic are never delivered", func(t *testing.T) {
		c, _ := connectV3(t, v3Options(url, "root-ret", "root", admin, nil))
		waitToken(t, c.Publish("news/internal/memo", 1, true, "secret memo"), "retained internal")
		waitToken(t, c.Publish("news/public", 1, true, "public news"), "retained public")
		got := newCollectV3()
		a, _ := connectV3(t, v3Options(url, "alice-news", "alice", alice, nil))
		waitToken(t, a.Subscribe("news/#", 1, got.handler), "news subscribe")
		deadline := time.After(2 * time.Second)
		sawPublic := false
		for {
			select {
			case m := <-got.ch:
				if m.Topic() == "news/internal/memo" {
					t.Fatalf("forbidden retained message delivered: %q", m.Payload())
				}
				sawPublic = sawPublic || m.Topic() == "news/public"
				continue
			case <-deadline:
			}
			break
		}
		if !sawPublic {
			t.Fatal("permitted retained message news/public not delivered")
		}
	})

	t.Run("a forbidden Will topic refuses the connection", func(t *testing.T) {
		_, code := connectV3(t, v3Options(url, "alice-will3", "alice", alice, nil).SetWill("users/bob/will", "x", 1, false))
		if code != 0x05 {
			t.Fatalf("v3 CONNACK %d, want 5", code)
		}
		c, ca := connectV5(t, dialV5(t, p, "tcp", nil), &paho.Connect{ClientID: "alice-will5", CleanStart: true,
			Username: "alice", UsernameFlag: true, Password: []byte(alice), PasswordFlag: true,
			WillMessage: &paho.WillMessage{Topic: "users/bob/will", QoS: 1, Payload: []byte("x")}})
		if c != nil || ca.ReasonCode != 0x87 {
			t.Fatalf("v5 CONNACK %+v, want 0x87", ca)
		}
	})

	if v, ok := p.metric(`idmq_acl_denied_total{action="subscribe"}`); !ok || v == "0" {
		t.Errorf(`idmq_acl_denied_total{action="subscribe"} = %q`, v)
	}
}

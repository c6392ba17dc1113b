package e2e

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt3 "github.com/eclipse/paho.mqtt.golang"
)

const denyActionConfig = `
log: {level: debug}
listeners: [{type: tcp, address: "127.0.0.1:{{tcp}}"}]
http: {address: "127.0.0.1:{{http}}"}
auth:
  providers:
    - {name: local, type: local}
acl:
  rules:
    - {topic: "users/%u/#", access: pubsub}
`

// secretPayload stands for user data; it must never reach the broker's log.
const secretPayload = "glucose-7.8-mmol"

// TestV3DeniedPublishAckedAndDropped: with the default acl.deny_action (ignore), an MQTT 3.1.1 client's
// denied QoS 1 and QoS 2 publishes are acknowledged [MQTT-3.3.5-2] (paho and mosquitto_pub -V mqttv311
// both see a completed flow and stay connected), never delivered, counted, and logged without payload.
func TestV3DeniedPublishAckedAndDropped(t *testing.T) {
	p := newIdmq(t, denyActionConfig)
	p.start()
	alice, bob := p.token("alice"), p.token("bob")
	url := p.brokerURL("tcp")

	bobGot := newCollectV3()
	bobC, _ := connectV3(t, v3Options(url, "bob", "bob", bob, nil))
	waitToken(t, bobC.Subscribe("users/bob/#", 1, bobGot.handler), "bob subscribe")

	a, _ := connectV3(t, v3Options(url, "alice-v3", "alice", alice, nil))
	waitToken(t, a.Publish("users/bob/inbox", 1, false, secretPayload), "denied QoS 1 publish")
	waitToken(t, a.Publish("users/bob/inbox", 2, true, secretPayload), "denied QoS 2 publish")
	if !a.IsConnectionOpen() {
		t.Fatal("the 3.1.1 client was disconnected for a denied publish")
	}
	if pub, err := exec.LookPath("mosquitto_pub"); err == nil {
		out, err := exec.Command(pub, "-h", "127.0.0.1", "-p", strconv.Itoa(p.ports["tcp"]), "-V", "mqttv311",
			"-u", "alice", "-P", alice, "-i", "alice-mosq", "-t", "users/bob/inbox", "-q", "1", "-m", secretPayload).CombinedOutput()
		if err != nil {
			t.Errorf("mosquitto_pub -V mqttv311 of a denied QoS 1 publish: %v %s", err, out)
		}
	}
	waitToken(t, a.Publish("users/alice/own", 1, false, "allowed"), "allowed publish on the same connection")

	// bob's next message is the marker: nothing of alice's reached him (the retained one neither).
	waitToken(t, bobC.Publish("users/bob/marker", 1, false, "m"), "marker")
	if m := bobGot.expect(t, "users/bob/marker", 5*time.Second); m == nil {
		return
	}
	late := newCollectV3()
	b2, _ := connectV3(t, v3Options(url, "bob-2", "bob", bob, nil))
	waitToken(t, b2.Subscribe("users/bob/#", 1, late.handler), "bob-2 subscribe")
	select {
	case m := <-late.ch:
		t.Fatalf("a denied publish was retained: %s %q", m.Topic(), m.Payload())
	case <-time.After(500 * time.Millisecond):
	}

	if v, ok := p.metric(`idmq_acl_denied_total{action="publish"}`); !ok || v != "3" {
		t.Errorf(`idmq_acl_denied_total{action="publish"} = %q, want 3`, v)
	}
	if !p.waitLog(`msg="acl: denied" client=alice-v3 username=alice action=publish topic=users/bob/inbox`, 5*time.Second) {
		t.Errorf("no debug line for the denial")
	}
	if strings.Contains(p.logs.String(), secretPayload) {
		t.Errorf("a payload reached the log")
	}
}

// TestV3DeniedPublishDisconnectsWhenConfigured: acl.deny_action disconnect ends a 3.1.1 client's
// connection at its denied QoS 1 publish; an MQTT 5 client still gets PUBACK 0x87 and stays. Neither
// line in the log (mochi's nor idmq's) carries the payload.
func TestV3DeniedPublishDisconnectsWhenConfigured(t *testing.T) {
	p := newIdmq(t, denyActionConfig+"  deny_action: disconnect\n")
	p.start()
	alice := p.token("alice")

	lost := make(chan error, 1)
	a, _ := connectV3(t, v3Options(p.brokerURL("tcp"), "alice-v3", "alice", alice, nil).
		SetConnectionLostHandler(func(_ mqtt3.Client, err error) { lost <- err }))
	a.Publish("users/bob/inbox", 1, false, secretPayload)
	select {
	case <-lost:
	case <-time.After(10 * time.Second):
		t.Fatal("the 3.1.1 client is still connected after a denied QoS 1 publish")
	}

	c, _ := connectV5(t, dialV5(t, p, "tcp", nil), &paho.Connect{ClientID: "alice-v5", CleanStart: true,
		Username: "alice", UsernameFlag: true, Password: []byte(alice), PasswordFlag: true})
	pr, _ := c.Publish(context.Background(), &paho.Publish{Topic: "users/bob/inbox", QoS: 1, Payload: []byte(secretPayload)})
	if pr == nil || pr.ReasonCode != 0x87 {
		t.Fatalf("v5 PUBACK %+v, want 0x87", pr)
	}
	if pr, _ := c.Publish(context.Background(), &paho.Publish{Topic: "users/alice/x", QoS: 1}); pr == nil || pr.ReasonCode != 0 {
		t.Fatalf("v5 client after its denial: PUBACK %+v", pr)
	}
	if !p.waitLog(`msg="acl: denied" client=alice-v5`, 5*time.Second) {
		t.Errorf("no debug line for the v5 denial")
	}
	if strings.Contains(p.logs.String(), secretPayload) {
		t.Errorf("a payload reached the log:\n%s", p.logs.String())
	}
}

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// TestRealOIDCProviderTokensConnect: a real OpenID Connect provider issues an access token over HTTP
// (client credentials grant); idmq, configured only with the issuer, finds the JWKS through the provider's
// discovery document and accepts the token over TCP and WebSocket, with claims mapped into topic rules.
func TestRealOIDCProviderTokensConnect(t *testing.T) {
	op := startOIDCProvider(t, oidcOptions{})
	p := newIdmq(t, fmt.Sprintf(`
listeners:
  - {type: tcp, address: "127.0.0.1:{{tcp}}"}
  - {type: ws, address: "127.0.0.1:{{ws}}"}
http: {address: "127.0.0.1:{{http}}"}
auth:
  providers:
    - name: corp
      type: oidc
      issuer: %s
      audiences: ["mqtt://idmq"]
      username_claim: email
      claims:
        - {path: org_id, attribute: org_id, required: true}
        - {path: app_metadata.plan, attribute: plan}
acl:
  rules:
    - {topic: "users/%%u/#", access: pubsub}
    - {topic: "orgs/%%{org_id}/#", access: pubsub, when: {plan: pro}}
`, op.Issuer()))
	p.start()
	token := op.ClientCredentialsToken(t, "mqtt://idmq")
	user := "e2e-service@example.com" // the provider's email claim for its default client

	got := newCollectV3()
	sub, code := connectV3(t, v3Options(p.brokerURL("tcp"), "oidc-sub", "jwt", token, nil))
	if code != 0 {
		t.Fatalf("v3 CONNACK %d with a real OIDC token", code)
	}
	waitToken(t, sub.Subscribe("orgs/org-e2e/#", 1, got.handler), "subscribe by mapped claims")
	waitToken(t, sub.Subscribe("users/"+user+"/#", 1, got.handler), "subscribe own topic")

	pub, ca := connectV5(t, dialV5(t, p, "ws", nil), &paho.Connect{ClientID: "oidc-pub-ws", CleanStart: true,
		Properties: &paho.ConnectProperties{AuthMethod: "JWT", AuthData: []byte(token)}})
	if pub == nil {
		t.Fatalf("v5 over WS with Authentication Method JWT: CONNACK 0x%02x", ca.ReasonCode)
	}
	for _, topic := range []string{"orgs/org-e2e/alerts", "users/" + user + "/inbox"} {
		if _, err := pub.Publish(context.Background(), &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(topic)}); err != nil {
			t.Fatal(err)
		}
		got.expect(t, topic, 5*time.Second)
	}

	// A token for another audience is refused with the v3 "bad username or password" code.
	other := op.ClientCredentialsToken(t, "https://not-idmq.example")
	if _, code := connectV3(t, v3Options(p.brokerURL("tcp"), "oidc-wrong-aud", "jwt", other, nil)); code != 0x04 {
		t.Fatalf("wrong-audience CONNACK %d, want 4", code)
	}
	if !p.waitLog("reason=invalid_audience", 5*time.Second) {
		t.Error("no log line with reason invalid_audience")
	}
	if v, ok := p.metric(`idmq_auth_total{provider="corp",reason="invalid_audience",result="failure"}`); !ok || v != "1" {
		_, body := p.get("/metrics")
		t.Errorf("auth failure not counted: %q\n%s", v, grepLines(body, "idmq_auth_total"))
	}
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// TestAuthPacketsOutOfTurn: AUTH with another method than CONNECT's [MQTT-4.12.1-1], AUTH continuing an
// exchange the server never started, and AUTH from a client that named no method at CONNECT
// [MQTT-4.12.0-7] each end the connection with DISCONNECT 0x82 (Protocol Error), never with an AUTH
// [MQTT-4.12.0-6].
func TestAuthPacketsOutOfTurn(t *testing.T) {
	p := newIdmq(t, aclConfig)
	p.start()
	token := p.token("alice")
	withMethod := &paho.Connect{CleanStart: true, Properties: &paho.ConnectProperties{AuthMethod: "JWT", AuthData: []byte(token)}}
	withPassword := &paho.Connect{CleanStart: true, Username: "alice", UsernameFlag: true, Password: []byte(token), PasswordFlag: true}
	for _, tc := range []struct {
		name    string
		connect paho.Connect
		auth    *paho.Auth
	}{
		{"another method [MQTT-4.12.1-1]", *withMethod, &paho.Auth{ReasonCode: 0x19, Properties: &paho.AuthProperties{AuthMethod: "SCRAM-SHA-256", AuthData: []byte(token)}}},
		{"continue without an exchange", *withMethod, &paho.Auth{ReasonCode: 0x18, Properties: &paho.AuthProperties{AuthMethod: "JWT", AuthData: []byte(token)}}},
		{"no method at CONNECT [MQTT-4.12.0-7]", *withPassword, &paho.Auth{ReasonCode: 0x19, Properties: &paho.AuthProperties{AuthMethod: "JWT", AuthData: []byte(token)}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cp := tc.connect
			cp.ClientID = "auth-out-of-turn"
			c, ca := connectV5(t, dialV5(t, p, "tcp", nil), &cp)
			if c == nil {
				t.Fatalf("CONNACK 0x%02x", ca.ReasonCode)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			// paho reports a DISCONNECT that ends an authentication as its AuthResponse.
			if ar, _ := c.Authenticate(ctx, tc.auth); ar != nil && (ar.Success || ar.ReasonCode != 0x82) {
				t.Errorf("AUTH answered with %+v, want DISCONNECT 0x82", ar)
			}
			select {
			case d := <-c.Disconnects:
				if d.ReasonCode != 0x82 {
					t.Fatalf("DISCONNECT 0x%02x, want 0x82", d.ReasonCode)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no DISCONNECT")
			}
		})
	}
}

// TestNoReasonStringWithoutProblemInformation: a client that set Request Problem Information to 0 gets
// PUBACK, PUBREC and SUBACK 0x87 without a Reason String [MQTT-3.1.2-29]; one that asked for it gets one.
func TestNoReasonStringWithoutProblemInformation(t *testing.T) {
	p := newIdmq(t, aclConfig)
	p.start()
	token := p.token("alice")
	for _, want := range []bool{false, true} {
		c, _ := connectV5(t, dialV5(t, p, "tcp", nil), &paho.Connect{ClientID: "problem-info", CleanStart: true,
			Properties: &paho.ConnectProperties{AuthMethod: "JWT", AuthData: []byte(token), RequestProblemInfo: want}})
		if c == nil {
			t.Fatal("not connected")
		}
		ctx := context.Background()
		for _, qos := range []byte{1, 2} {
			pr, err := c.Publish(ctx, &paho.Publish{Topic: "users/bob/x", QoS: qos, Payload: []byte("x")})
			if pr == nil || pr.ReasonCode != 0x87 {
				t.Fatalf("QoS %d: %+v %v, want 0x87", qos, pr, err)
			}
			if got := pr.Properties != nil && pr.Properties.ReasonString != ""; got != want {
				t.Errorf("Request Problem Information %v: QoS %d acknowledgement has a Reason String: %v", want, qos, got)
			}
		}
		sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "users/bob/#", QoS: 1}}})
		if sa == nil || len(sa.Reasons) != 1 || sa.Reasons[0] != 0x87 {
			t.Fatalf("SUBACK %+v %v, want 0x87", sa, err)
		}
		if got := sa.Properties != nil && sa.Properties.ReasonString != ""; got && !want {
			t.Errorf("Request Problem Information 0: SUBACK has a Reason String %q", sa.Properties.ReasonString)
		}
		_ = c.Disconnect(&paho.Disconnect{})
	}
}

// TestConnackRepeatsAuthMethod: a successful CONNACK repeats the CONNECT's Authentication Method
// [MQTT-4.12.0-5] (3.2.2.3.17), through paho.golang (with an AuthHandler: v0.23.0 panics without one); a
// client that sent none gets none; mqtt.skip_auth_method_echo leaves it out for clients that cannot take it.
func TestConnackRepeatsAuthMethod(t *testing.T) {
	for _, skip := range []bool{false, true} {
		cfg := aclConfig
		if skip {
			cfg = "mqtt: {skip_auth_method_echo: true}\n" + cfg
		}
		p := newIdmq(t, cfg)
		p.start()
		token := p.token("alice")
		for _, tc := range []struct {
			name string
			cp   paho.Connect
			want string
		}{
			{"method JWT", paho.Connect{Properties: &paho.ConnectProperties{AuthMethod: "JWT", AuthData: []byte(token)}}, "JWT"},
			{"password", paho.Connect{Username: "alice", UsernameFlag: true, Password: []byte(token), PasswordFlag: true}, ""},
		} {
			if skip {
				tc.want = ""
			}
			cp := tc.cp
			cp.ClientID, cp.CleanStart = "echo-"+tc.name, true
			c, ca := connectV5(t, dialV5(t, p, "tcp", nil), &cp)
			if c == nil {
				t.Fatalf("skip %v, %s: CONNACK 0x%02x", skip, tc.name, ca.ReasonCode)
			}
			got := ""
			if ca.Properties != nil {
				got = ca.Properties.AuthMethod
			}
			if got != tc.want {
				t.Errorf("skip_auth_method_echo %v, %s: CONNACK Authentication Method %q, want %q", skip, tc.name, got, tc.want)
			}
			_ = c.Disconnect(&paho.Disconnect{})
		}
		p.stop()
	}
}

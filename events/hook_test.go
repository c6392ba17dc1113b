package events

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/idmq/idmq/authhook"
	"github.com/idmq/idmq/internal/testkit"
	"github.com/idmq/idmq/mochifix"
)

// The hook reports a connection's start and end with the verified username, and an end idmq caused with
// the code it sent; an auth decision in between arrives between the two.
func TestHookReportsConnectionsInOrder(t *testing.T) {
	r := newReceiver(t)
	d, _ := newDispatcher(t, r.webhook(), nil)
	t.Cleanup(func() { _ = d.Close() })
	identity := func(cl *mqtt.Client) (*authhook.Identity, bool) {
		return &authhook.Identity{Username: "user-of-" + cl.ID, Provider: "test"}, true
	}
	h := NewHook(d, identity)
	m := testkit.StartMochi(t, testkit.MochiOptions{}, new(auth.AllowHook), h)

	c, _, err := testkit.ConnectV5(t, testkit.DialTCP(t, m.TCP), &paho.Connect{ClientID: "quiet", CleanStart: true})
	if err != nil {
		t.Fatal(err)
	}
	_ = c.Disconnect(&paho.Disconnect{ReasonCode: 0})

	c, _, err = testkit.ConnectV5(t, testkit.DialTCP(t, m.TCP), &paho.Connect{ClientID: "expiring", CleanStart: true})
	if err != nil {
		t.Fatal(err)
	}
	cl, ok := m.Server.Clients.Get("expiring")
	if !ok {
		t.Fatal("client not found")
	}
	// mochi writes the CONNACK before it calls OnSessionEstablished: the token's expiry is simulated once the
	// connection is established, as the auth hook's timer (which starts with the session) would see it.
	testkit.Eventually(t, 10*time.Second, func() bool { return len(r.events()) == 3 }, "the second connected event")
	code := packets.Code{Code: 0xA0, Reason: "token expired"}
	h.OnAuthEvent(authhook.AuthEvent{Kind: authhook.TokenExpired, Client: cl, Identity: &authhook.Identity{Username: "user-of-expiring"}, Provider: "test", Code: code})
	if err := mochifix.Disconnect(cl, code, code.Reason); err != nil {
		t.Fatal(err)
	}
	c.NextDisconnect(t, 5*time.Second)

	testkit.Eventually(t, 10*time.Second, func() bool { return len(r.events()) == 5 }, "5 events")
	var got []string
	for _, e := range r.events() {
		if e.Username != "user-of-"+e.ClientID || e.Provider != "test" || e.RemoteAddr == "" {
			t.Fatalf("event %+v: want the identity's username and provider, and the remote address", e)
		}
		s := e.ClientID + " " + string(e.Type)
		if e.ReasonCode != nil {
			s += fmt.Sprintf(" %#x %s", *e.ReasonCode, e.Reason)
		}
		got = append(got, s)
	}
	t.Logf("events: %q", got)
	quiet := []string{}
	expiring := []string{}
	for _, s := range got {
		if strings.HasPrefix(s, "quiet") {
			quiet = append(quiet, s)
		} else {
			expiring = append(expiring, s)
		}
	}
	if len(quiet) != 2 || quiet[0] != "quiet client.connected" || !strings.HasPrefix(quiet[1], "quiet client.disconnected 0x0 ") {
		t.Fatalf("quiet: %q, want connected, then disconnected with 0x00", quiet)
	}
	want := []string{"expiring client.connected", "expiring client.token_expired 0xa0 token expired", "expiring client.disconnected 0xa0 token expired"}
	if len(expiring) != 3 || expiring[0] != want[0] || expiring[1] != want[1] || expiring[2] != want[2] {
		t.Fatalf("expiring: %q, want %q", expiring, want)
	}
}

// decideBeforeConnack makes authhook's decision in the window mochi leaves between a client's authentication
// and its CONNACK, as a revocation arriving a moment after the CONNECT does.
type decideBeforeConnack struct {
	mqtt.HookBase
	h    *Hook
	kind authhook.AuthEvent
}

func (d *decideBeforeConnack) ID() string { return "decide-before-connack" }
func (d *decideBeforeConnack) Provides(b byte) bool {
	return b == mqtt.OnSessionEstablish
}
func (d *decideBeforeConnack) OnSessionEstablish(cl *mqtt.Client, _ packets.Packet) {
	a := d.kind
	a.Client = cl
	d.h.OnAuthEvent(a)
}

// A revocation made before the CONNACK is reported after client.connected, and the disconnect carries its code
// (CI saw session.revoked before client.connected, and a disconnect without 0x98).
func TestHookHoldsADecisionMadeBeforeTheConnack(t *testing.T) {
	r := newReceiver(t)
	d, _ := newDispatcher(t, r.webhook(), nil)
	t.Cleanup(func() { _ = d.Close() })
	identity := func(cl *mqtt.Client) (*authhook.Identity, bool) {
		return &authhook.Identity{Username: "user-of-" + cl.ID, Provider: "test"}, true
	}
	h := NewHook(d, identity)
	code := packets.Code{Code: 0x98, Reason: "credentials revoked"}
	early := &decideBeforeConnack{h: h, kind: authhook.AuthEvent{Kind: authhook.CredentialsRevoked,
		Identity: &authhook.Identity{Username: "user-of-raced"}, Provider: "test", Code: code}}
	m := testkit.StartMochi(t, testkit.MochiOptions{}, new(auth.AllowHook), h, early)

	c, _, err := testkit.ConnectV5(t, testkit.DialTCP(t, m.TCP), &paho.Connect{ClientID: "raced", CleanStart: true})
	if err != nil {
		t.Fatal(err)
	}
	cl, ok := m.Server.Clients.Get("raced")
	if !ok {
		t.Fatal("client not found")
	}
	if err := mochifix.Disconnect(cl, code, code.Reason); err != nil {
		t.Fatal(err)
	}
	c.NextDisconnect(t, 5*time.Second)

	testkit.Eventually(t, 10*time.Second, func() bool { return len(r.events()) == 3 }, "3 events")
	var got []string
	for _, e := range r.events() {
		s := string(e.Type)
		if e.ReasonCode != nil {
			s += fmt.Sprintf(" %#x", *e.ReasonCode)
		}
		got = append(got, s)
	}
	want := []string{"client.connected", "session.revoked 0x98", "client.disconnected 0x98"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("events %q, want %q", got, want)
	}
}

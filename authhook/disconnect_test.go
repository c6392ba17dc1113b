package authhook

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	paho3 "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/idmq/idmq/internal/testkit"
)

func TestDisconnectV5(t *testing.T) {
	b := startBrokerWith(t, Options{Config: localConfig()}, &allowAllACL{})
	tests := []struct {
		name  string
		props *paho.ConnectProperties // paho sends Request Problem Information 0 unless told otherwise
	}{
		{name: "request problem information 0", props: &paho.ConnectProperties{}},
		{name: "request problem information 1", props: &paho.ConnectProperties{RequestProblemInfo: true}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			token, _ := mintLocal(t, b.hook, "alice", time.Hour, nil)
			cp := passwordConnect(fmt.Sprintf("admin-%d", i), "", token)
			cp.Properties = tt.props
			c, ca := connectV5(t, b.addr, cp)
			if ca.ReasonCode != 0 {
				t.Fatalf("CONNACK 0x%02X", ca.ReasonCode)
			}
			cl, _ := b.server.Clients.Get(cp.ClientID)
			if err := b.hook.Disconnect(cl, packets.ErrAdministrativeAction, "disconnected by an administrator"); err != nil {
				t.Fatal(err)
			}
			if td := c.NextDisconnect(t, 3*time.Second); td.ReasonCode != 0x98 || td.Properties == nil || td.Properties.ReasonString != "disconnected by an administrator" {
				t.Fatalf("DISCONNECT 0x%02X %+v", td.ReasonCode, td.Properties)
			}
			testkit.Eventually(t, 10*time.Second, cl.Closed, "the client was not closed")
			if err := b.hook.Disconnect(cl, packets.ErrAdministrativeAction, ""); !errors.Is(err, ErrNotConnected) {
				t.Fatalf("second Disconnect: %v, want ErrNotConnected", err)
			}
		})
	}
}

// A second Disconnect before mochi has ended the client (here: no read loop, so it never does) sends nothing
// and says so: the admin API answers 404 for a client already on its way out.
func TestDisconnectTwiceBeforeMochiNotices(t *testing.T) {
	b := startBrokerWith(t, Options{Config: localConfig()}, &allowAllACL{})
	conn, peer := net.Pipe()
	defer peer.Close()
	cl := b.server.NewClient(conn, "t", "twice", false)
	cl.Properties.ProtocolVersion = 5
	b.hook.attach(cl, &Identity{Username: "alice", ClientID: "twice", Provider: "local"})
	received := make(chan []byte, 1)
	go func() {
		data, _ := io.ReadAll(peer) // until the broker closes its end
		received <- data
	}()
	if err := b.hook.Disconnect(cl, packets.ErrAdministrativeAction, ""); err != nil {
		t.Fatal(err)
	}
	if cl.Closed() {
		t.Fatal("mochi marked the client closed: the test no longer covers the window before it does")
	}
	if err := b.hook.Disconnect(cl, packets.ErrAdministrativeAction, ""); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("second Disconnect: %v, want ErrNotConnected", err)
	}
	data := <-received
	if len(data) == 0 || data[0] != packets.Disconnect<<4 || int(data[1])+2 != len(data) {
		t.Fatalf("the client received % x, want exactly one DISCONNECT", data)
	}
}

func TestDisconnectV3ClosesConnection(t *testing.T) {
	b := startBrokerWith(t, Options{Config: localConfig()})
	token, _ := mintLocal(t, b.hook, "bob", time.Hour, nil)
	lost := make(chan error, 1)
	opts := testkit.V3Options("tcp://"+b.addr, "v3-admin", "jwt", token).
		SetConnectionLostHandler(func(_ paho3.Client, err error) { lost <- err })
	if _, code, err := testkit.ConnectV3(t, opts); err != nil {
		t.Fatalf("connect: CONNACK %d, %v", code, err)
	}
	cl, _ := b.server.Clients.Get("v3-admin")
	if err := b.hook.Disconnect(cl, packets.ErrAdministrativeAction, "bye"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-lost:
	case <-time.After(3 * time.Second):
		t.Fatal("connection still open")
	}
}

func TestDisconnectWithoutConnection(t *testing.T) {
	b := startBrokerWith(t, Options{Config: localConfig()})
	restored := b.server.NewClient(nil, "test", "restored", false) // a persisted session, owner offline
	if err := b.hook.Disconnect(restored, packets.ErrAdministrativeAction, ""); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("err = %v", err)
	}
	if err := b.hook.Disconnect(nil, packets.ErrAdministrativeAction, ""); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("nil client: %v", err)
	}
}

// slowPublish keeps the client's read loop busy inside a packet, where a disconnect is most likely to land.
type slowPublish struct{ mqtt.HookBase }

func (*slowPublish) ID() string           { return "test-slow-publish" }
func (*slowPublish) Provides(b byte) bool { return b == mqtt.OnPublish }
func (*slowPublish) OnPublish(_ *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	time.Sleep(time.Millisecond)
	return pk, nil
}

// A client that is publishing when it is disconnected still gets its Will out, exactly once: mochi's own
// DisconnectClient loses it whenever its read loop is inside a packet rather than waiting for one.
func TestDisconnectBusyClientPublishesWillOnce(t *testing.T) {
	b := startBrokerWith(t, Options{Config: localConfig()}, &allowAllACL{}, &slowPublish{})
	watcher := subscribeV5(t, b, "watcher", "wills/#")
	for i := range 10 {
		token, _ := mintLocal(t, b.hook, "busy", time.Hour, nil)
		id := fmt.Sprintf("busy-%d", i)
		cp := passwordConnect(id, "", token)
		cp.WillMessage = &paho.WillMessage{Topic: "wills/" + id, Payload: []byte(id)}
		c, ca := connectV5(t, b.addr, cp)
		if ca.ReasonCode != 0 {
			t.Fatalf("CONNACK 0x%02X", ca.ReasonCode)
		}
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := c.Publish(context.Background(), &paho.Publish{Topic: "load/" + id, Payload: []byte("x")}); err != nil {
					return
				}
			}
		}()
		time.Sleep(20 * time.Millisecond)
		cl, _ := b.server.Clients.Get(id)
		if err := b.hook.Disconnect(cl, packets.ErrAdministrativeAction, ""); err != nil {
			t.Fatal(err)
		}
		close(stop)
		<-done
		expectWillOnce(t, watcher, "wills/"+id, id)
	}
}

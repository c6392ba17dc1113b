package testkit

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session"
	mqtt3 "github.com/eclipse/paho.mqtt.golang"
)

// DialTCP opens a TCP connection for a client to run over.
func DialTCP(t testing.TB, addr string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

// V5Client is a paho.golang MQTT 5 client and what the server sent it.
type V5Client struct {
	*paho.Client
	Conn        net.Conn
	Received    chan *paho.Publish
	Disconnects chan Disconnect
}

// Disconnect is a DISCONNECT the server sent, and when it arrived.
type Disconnect struct {
	*paho.Disconnect
	At time.Time
}

// ConnectV5 sends cp over conn (KeepAlive 30 when unset) and waits up to 15 s for the CONNACK. The client
// comes back even when refused (err set, the CONNACK saying why when there was one), its connection then
// closed; an accepted client disconnects when the test ends.
func ConnectV5(t testing.TB, conn net.Conn, cp *paho.Connect) (*V5Client, *paho.Connack, error) {
	t.Helper()
	return ConnectV5Session(t, conn, cp, nil)
}

// ConnectV5Session is ConnectV5 with the client's session state in sess (nil: a new one per connection). A
// client that resumes its session passes the state of its previous connection, as a real client does: the
// packet ids of QoS 2 messages it received (PUBREC sent) survive, so a resent one is not delivered again.
func ConnectV5Session(t testing.TB, conn net.Conn, cp *paho.Connect, sess session.SessionManager) (*V5Client, *paho.Connack, error) {
	t.Helper()
	c := &V5Client{Conn: conn, Received: make(chan *paho.Publish, 10_000), Disconnects: make(chan Disconnect, 4)}
	if _, ok := conn.(sync.Locker); !ok {
		conn = &packetLocked{Conn: conn}
	}
	c.Client = paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			c.Received <- pr.Packet
			return true, nil
		}},
		OnServerDisconnect: func(d *paho.Disconnect) { c.Disconnects <- Disconnect{d, time.Now()} },
		OnClientError:      func(error) {},
		AuthHandler:        NoAuthExchange{},
		Session:            sess,
	})
	if cp.KeepAlive == 0 {
		cp.KeepAlive = 30
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	ca, err := c.Connect(ctx, cp)
	if err != nil {
		_ = c.Conn.Close()
	} else {
		t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	}
	return c, ca, err
}

// NoAuthExchange is the AuthHandler a paho.golang client needs when it sends an Authentication Method:
// paho.golang v0.23.0 calls AuthHandler.Authenticated, without a nil check, on a successful CONNACK that
// repeats the method, as MQTT 5 requires [MQTT-4.12.0-5]. idmq never continues an exchange (AUTH 0x18).
type NoAuthExchange struct{}

func (NoAuthExchange) Authenticate(*paho.Auth) *paho.Auth { return &paho.Auth{ReasonCode: 0x18} }
func (NoAuthExchange) Authenticated()                     {}

// packetLocked makes paho.golang write each packet whole. paho writes a packet's parts with one Write each
// (net.Buffers) while other goroutines of its own write too (acknowledgements, PINGREQ); it holds the
// connection's lock around a packet only when the connection is a sync.Locker. Over TLS and WebSocket,
// which have no writev, parts of two packets could otherwise interleave and the broker read a corrupt
// packet (seen: a payload that began with a PINGREQ's bytes; a SUBSCRIBE over WebSocket never answered).
type packetLocked struct {
	net.Conn
	sync.Mutex
}

// Next waits up to within for the next message, whatever its topic. Messages reach a client in order, so
// a test that must see nothing publishes a marker after it and expects the marker next.
func (c *V5Client) Next(t testing.TB, within time.Duration) *paho.Publish {
	t.Helper()
	select {
	case p := <-c.Received:
		return p
	case <-time.After(within):
		t.Fatalf("no message within %s", within)
		return nil
	}
}

// Expect waits up to within for a message on topic, dropping messages on other topics.
func (c *V5Client) Expect(t testing.TB, topic string, within time.Duration) *paho.Publish {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case p := <-c.Received:
			if p.Topic == topic {
				return p
			}
		case <-deadline:
			t.Fatalf("no message on %s within %s", topic, within)
			return nil
		}
	}
}

// NextDisconnect waits up to within for the DISCONNECT the server sends; none fails the test.
func (c *V5Client) NextDisconnect(t testing.TB, within time.Duration) Disconnect {
	t.Helper()
	select {
	case d := <-c.Disconnects:
		return d
	case <-time.After(within):
		t.Fatalf("no DISCONNECT within %s", within)
		return Disconnect{}
	}
}

// NoDisconnect fails the test if the server sends a DISCONNECT within the given time; with 0 it only looks
// at what has already arrived.
func (c *V5Client) NoDisconnect(t testing.TB, within time.Duration) {
	t.Helper()
	select { // first what has arrived: a select with a ready timer would pick either at random
	case d := <-c.Disconnects:
		t.Fatalf("disconnected: DISCONNECT 0x%02X %+v", d.ReasonCode, d.Properties)
		return
	default:
	}
	if within <= 0 {
		return
	}
	select {
	case d := <-c.Disconnects:
		t.Fatalf("disconnected: DISCONNECT 0x%02X %+v", d.ReasonCode, d.Properties)
	case <-time.After(within):
	}
}

// SubscribeQoS1 subscribes at QoS 1 and returns the SUBACK's reason code; no SUBACK within 5 s fails the test.
func (c *V5Client) SubscribeQoS1(t testing.TB, filter string) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
	if sa == nil {
		t.Fatalf("subscribe %q: %v", filter, err)
	}
	return sa.Reasons[0]
}

// JWTConnect is an MQTT 5 CONNECT carrying token as Authentication Data under method "JWT", the form a
// client can renew with AUTH; username is sent when not empty.
func JWTConnect(clientID, username, token string) *paho.Connect {
	return &paho.Connect{ClientID: clientID, CleanStart: true, Username: username, UsernameFlag: username != "",
		Properties: &paho.ConnectProperties{AuthMethod: "JWT", AuthData: []byte(token)}}
}

// V3Options are MQTT 3.1.1 client options for a test: no reconnecting, no retrying, 10 s to connect.
func V3Options(url, clientID, username, password string) *mqtt3.ClientOptions {
	return mqtt3.NewClientOptions().AddBroker(url).SetClientID(clientID).
		SetUsername(username).SetPassword(password).SetProtocolVersion(4).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(10 * time.Second).
		SetKeepAlive(30 * time.Second)
}

// ConnectV3 connects a paho MQTT 3.1.1 client and returns it with the CONNACK return code (0: accepted)
// and the connect error; 15 s without an answer fails the test. An accepted client disconnects when the
// test ends.
func ConnectV3(t testing.TB, o *mqtt3.ClientOptions) (mqtt3.Client, byte, error) {
	t.Helper()
	c := mqtt3.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(15 * time.Second) {
		t.Fatal("v3 connect timed out")
	}
	code := tok.(*mqtt3.ConnectToken).ReturnCode()
	if tok.Error() == nil {
		t.Cleanup(func() { c.Disconnect(100) })
	}
	return c, code, tok.Error()
}

package e2e

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/gorilla/websocket"

	"github.com/idmq/idmq/internal/testkit"
	"github.com/idmq/idmq/internal/wsconn"
)

// brokerURL is the paho v3 URL of a transport ("tcp", "tls", "ws", "wss").
func (p *idmqProc) brokerURL(transport string) string {
	scheme := map[string]string{"tcp": "tcp", "tls": "ssl", "ws": "ws", "wss": "wss"}[transport]
	u := fmt.Sprintf("%s://%s", scheme, p.addr(transport))
	if transport == "ws" || transport == "wss" {
		u += "/mqtt"
	}
	return u
}

// v3Options are the paho 3.1.1 client options the tests share; handlers may run concurrently.
func v3Options(url, clientID, username, password string, tlsConf *tls.Config) *mqtt3.ClientOptions {
	o := testkit.V3Options(url, clientID, username, password).SetOrderMatters(false)
	if tlsConf != nil {
		o.SetTLSConfig(tlsConf)
	}
	return o
}

// connectV3 connects a paho 3.1.1 client and returns it with the CONNACK return code (0 = accepted); a
// refused client is nil.
func connectV3(t *testing.T, o *mqtt3.ClientOptions) (mqtt3.Client, byte) {
	t.Helper()
	c, code, err := testkit.ConnectV3(t, o)
	if err != nil {
		return nil, code
	}
	return c, code
}

// dialV5 opens the raw transport a paho v5 client runs over.
func dialV5(t *testing.T, p *idmqProc, transport string, tlsConf *tls.Config) net.Conn {
	t.Helper()
	addr := p.addr(transport)
	switch transport {
	case "tcp":
		return testkit.DialTCP(t, addr)
	case "tls":
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, tlsConf)
		if err != nil {
			t.Fatal(err)
		}
		return c
	default:
		d := websocket.Dialer{Subprotocols: []string{"mqtt"}, TLSClientConfig: tlsConf, HandshakeTimeout: 5 * time.Second}
		scheme := map[string]string{"ws": "ws", "wss": "wss"}[transport]
		ws, resp, err := d.Dial(fmt.Sprintf("%s://%s/mqtt", scheme, addr), http.Header{})
		if err != nil {
			t.Fatalf("websocket dial: %v (%v)", err, resp)
		}
		return wsconn.New(ws)
	}
}

// connectV5 runs a v5 CONNECT over conn; a refused CONNECT returns the CONNACK and a nil client.
func connectV5(t *testing.T, conn net.Conn, cp *paho.Connect) (*testkit.V5Client, *paho.Connack) {
	t.Helper()
	c, ca, err := testkit.ConnectV5(t, conn, cp)
	if err != nil {
		if ca == nil {
			t.Fatalf("v5 connect: %v", err)
		}
		return nil, ca
	}
	return c, ca
}

// collectV3 records every message a v3 client receives.
type collectV3 struct {
	ch chan mqtt3.Message
}

func newCollectV3() *collectV3 { return &collectV3{ch: make(chan mqtt3.Message, 10000)} }

func (c *collectV3) handler(_ mqtt3.Client, m mqtt3.Message) { c.ch <- m }

func (c *collectV3) expect(t *testing.T, topic string, within time.Duration) mqtt3.Message {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case m := <-c.ch:
			if m.Topic() == topic {
				return m
			}
		case <-deadline:
			t.Fatalf("no message on %s within %s", topic, within)
			return nil
		}
	}
}

func waitToken(t *testing.T, tok mqtt3.Token, what string) {
	t.Helper()
	if !tok.WaitTimeout(10 * time.Second) {
		t.Fatalf("%s timed out", what)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

package mochifix

import (
	"bufio"
	"net"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/packets"
)

// TestConnackEchoesAuthenticationMethod: by default a successful CONNACK repeats the CONNECT's
// Authentication Method [MQTT-4.12.0-5] and a client that sent none gets none [MQTT-4.12.0-6]; with
// SkipAuthMethodEcho, mochi's CONNACK has none.
func TestConnackEchoesAuthenticationMethod(t *testing.T) {
	for _, echo := range []bool{true, false} {
		s := mqtt.New(&mqtt.Options{Logger: quietLog()})
		addr := serveWithFixes(t, s, Options{Hooks: []mqtt.Hook{new(auth.AllowHook)}, SkipAuthMethodEcho: !echo})
		for _, method := range []string{"JWT", ""} {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			c := &rawV5{t: t, c: conn, r: bufio.NewReader(conn)}
			c.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect},
				Connect:    packets.ConnectParams{ProtocolName: []byte("MQTT"), ClientIdentifier: "m-" + method, Keepalive: 60, Clean: true},
				Properties: packets.Properties{AuthenticationMethod: method, AuthenticationData: []byte("token")}})
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			pk := readPacket(t, conn, c.r, 5)
			if pk.FixedHeader.Type != packets.Connack || pk.ReasonCode != 0 {
				t.Fatalf("CONNACK type %d code %#x", pk.FixedHeader.Type, pk.ReasonCode)
			}
			want := ""
			if echo {
				want = method
			}
			if got := pk.Properties.AuthenticationMethod; got != want {
				t.Errorf("echo %v, CONNECT method %q: CONNACK method %q, want %q", echo, method, got, want)
			}
			conn.Close()
		}
	}
}

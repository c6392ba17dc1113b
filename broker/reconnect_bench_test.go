package broker

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/idmq/idmq/authhook"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// BenchmarkCachedReconnectHooks is what idmq's hooks add to one reconnect with a token already in the
// verified-token cache, and to its disconnect: the cache hit, identity, session and expiry queue (auth), the
// compiled rules and Will check (ACL). mochi's own work is left out; bench/compare.sh measures the whole.
func BenchmarkCachedReconnectHooks(b *testing.B) {
	br := brokerFromYAML(b, fmt.Sprintf(`
data_dir: %s
listeners: [{type: tcp, address: "127.0.0.1:0"}]
storage: {type: memory}
auth: {providers: [{name: local, type: local}]}
acl: {rules: [{topic: "users/%%u/#", access: pubsub}]}
`, b.TempDir()))
	token, err := br.auth.LocalIssuer().Mint("alice", time.Hour, nil, authhook.TopicGrants{})
	if err != nil {
		b.Fatal(err)
	}
	conn, peer := net.Pipe()
	b.Cleanup(func() { conn.Close(); peer.Close() })
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 5,
		Connect:         packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, ClientIdentifier: "c1", Password: []byte(token), PasswordFlag: true},
	}
	newClient := func() *mqtt.Client {
		cl := br.server.NewClient(conn, "tcp0", "c1", false)
		cl.ParseConnect("tcp0", pk)
		return cl
	}
	connect := func(cl *mqtt.Client) {
		if err := br.auth.OnConnect(cl, pk); err != nil {
			b.Fatal(err)
		}
		if err := br.acl.OnConnect(cl, pk); err != nil {
			b.Fatal(err)
		}
		br.auth.OnSessionEstablished(cl, pk)
		br.acl.OnDisconnect(cl, nil, true)
		br.auth.OnDisconnect(cl, nil, true)
	}
	connect(newClient()) // fills the cache
	// mochi's clients are made outside the timer, a batch at a time, so that only the hooks are measured.
	const batch = 1024
	clients := make([]*mqtt.Client, batch)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%batch == 0 {
			b.StopTimer()
			for j := range clients {
				clients[j] = newClient()
			}
			b.StartTimer()
		}
		connect(clients[i%batch])
	}
}

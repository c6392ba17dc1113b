package cluster

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/idmq/idmq/refusal"
)

// connectedClient is a client of s as mochi sees it after CONNECT, on one end of a pipe; the other end is what
// the remote MQTT client reads.
func connectedClient(t *testing.T, s *mqtt.Server, id, user string) (*mqtt.Client, net.Conn) {
	t.Helper()
	server, remote := net.Pipe()
	t.Cleanup(func() { server.Close(); remote.Close() })
	cl := s.NewClient(server, "test", id, false)
	cl.Properties.ProtocolVersion = 5
	cl.Properties.Username = []byte(user)
	s.Clients.Add(cl)
	return cl, remote
}

// TestOwnersTakeoverAcrossNodes: the same user connecting a client id on node B ends its connection on node A
// with DISCONNECT 0x8E; another user's CONNECT with that client id is refused with ClientIDTaken.
func TestOwnersTakeoverAcrossNodes(t *testing.T) {
	nodes, _ := startCluster(t, 2)
	sA, hA := mochiNode(t, nodes[0])
	sB, hB := mochiNode(t, nodes[1])
	clA, remoteA := connectedClient(t, sA, "dev-1", "alice")
	if err := hA.OnConnect(clA, packets.Packet{}); err != nil {
		t.Fatal(err)
	}
	clB, _ := connectedClient(t, sB, "dev-1", "alice")
	start := time.Now()
	if err := hB.OnConnect(clB, packets.Packet{}); err != nil {
		t.Fatal(err)
	}
	_ = remoteA.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 3)
	if _, err := io.ReadFull(remoteA, buf); err != nil {
		t.Fatalf("A's client got no DISCONNECT: %v", err)
	}
	if buf[0] != packets.Disconnect<<4 || buf[2] != packets.ErrSessionTakenOver.Code {
		t.Fatalf("A's client read % x; want DISCONNECT 0x8E", buf)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("takeover took %s", took)
	}

	clBob, remoteBob := connectedClient(t, sA, "dev-1", "bob")
	go func() { _, _ = io.Copy(io.Discard, remoteBob) }() // bob reads his CONNACK
	err := hA.OnConnect(clBob, packets.Packet{})
	var code packets.Code
	if !errors.As(err, &code) || code.Code != refusal.Lookup(refusal.ClientIDTaken).V5 {
		t.Fatalf("bob taking alice's client id: %v; want ClientIDTaken", err)
	}
}

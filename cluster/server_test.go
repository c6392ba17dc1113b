package cluster

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
)

// TestEmbeddedClientPorts: a node without routes opens no client port at all; a routed node's client port (which
// nats-server needs for its routes) refuses anyone without the process's token; client_listen opens one on the
// configured address.
func TestEmbeddedClientPorts(t *testing.T) {
	solo := Config{Node: "solo"}
	solo.SetDefaults(t.TempDir())
	c, err := Start(context.Background(), solo, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if addr := c.srv.Addr(); addr != nil {
		t.Fatalf("a node without routes listens for clients on %v", addr)
	}

	cfgs := clusterConfigs(t, 3)
	port := freePort(t)
	cfgs[2].NATS.ClientListen = fmt.Sprintf("127.0.0.1:%d", port)
	nodes := startNodes(t, cfgs)

	_, err = nats.Connect(nodes[0].srv.ClientURL())
	if err == nil || !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("connecting to a routed node's internal client port without the token: %v, want an authorization error", err)
	}
	nc, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", port))
	if err != nil {
		t.Fatalf("client_listen: %v", err)
	}
	defer nc.Close()
	if _, err := nc.Request("$JS.API.INFO", nil, testOpts.OpTimeout); err != nil {
		t.Fatalf("JetStream through client_listen: %v", err)
	}
}

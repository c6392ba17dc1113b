package broker

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/idmq/idmq/refusal"
)

// httpPublisher puts HTTP publishes into mochi as an inline client, so every hook sees them as it sees a
// client's publish: the cluster routes them (and, for QoS 1/2, waits for JetStream's ack before it
// returns), the store persists retained messages and each subscriber's QoS 1/2 copy. The ACL hook passes
// inline clients; the key's topic filters are checked before (publish.go).
//
// Why returning from publish means durable on one node too, without the write-ahead log: mochi acknowledges
// a client's QoS 1/2 publish BEFORE it queues the message for its subscribers, which is the gap the log
// closes (mochifix/wal_hook.go, which skips inline clients). An inline publish is not acknowledged at all:
// mochi queues it for every subscriber (persisting each QoS 1/2 copy and the retained message, synchronously)
// and only then returns from InjectPacket, and only then does the HTTP answer go out.
//
// It is a hook too: a hook that refuses the publish (the cluster, when JetStream did not take it) makes
// mochi return without error and without OnPublished, so OnPublished is how a caller learns it went through.
type httpPublisher struct {
	mqtt.HookBase
	server *mqtt.Server
	// clients are inline clients, one per publish in progress: OnPublished must tell whose publish it saw.
	clients sync.Pool
	calls   sync.Map // *mqtt.Client -> *atomic.Bool, set by OnPublished
	// reservedID is the publisher's client id in force (it reloads): an MQTT client may not take it, or No
	// Local and the cluster would mistake the HTTP publisher's messages for its own.
	reservedID func() string
}

var _ mqtt.Hook = (*httpPublisher)(nil)

// errNotPublished: a hook refused the publish (see Hook.OnPublish of the cluster).
var errNotPublished = errors.New("the broker did not take the message (the cluster did not store it)")

func newHTTPPublisher(server *mqtt.Server, reservedID func() string) *httpPublisher {
	p := &httpPublisher{server: server, reservedID: reservedID}
	p.clients.New = func() any {
		cl := server.NewClient(nil, "http", "", true)
		cl.Properties.ProtocolVersion = 5 // keep MQTT 5 properties: mochi strips them for 3.1.1 publishers
		return cl
	}
	return p
}

func (p *httpPublisher) ID() string { return "idmq-http-publish" }

func (p *httpPublisher) Provides(b byte) bool { return b == mqtt.OnPublished || b == mqtt.OnConnect }

// OnConnect refuses an MQTT client that presents the HTTP publisher's client id, like an id held by another
// user's session, before any token is verified.
func (p *httpPublisher) OnConnect(cl *mqtt.Client, _ packets.Packet) error {
	if cl.ID != p.reservedID() {
		return nil
	}
	p.Log.Log(context.Background(), refusal.Lookup(refusal.ClientIDTaken).Level,
		"connection refused: the client id is the HTTP publisher's (http.publisher_client_id)", "remote", cl.Net.Remote, "client", cl.ID)
	if code, send := refusal.Connack(refusal.ClientIDTaken, cl.Properties.ProtocolVersion); send {
		_ = p.server.SendConnack(cl, code, false, nil)
	}
	return refusal.Err(refusal.ClientIDTaken)
}

func (p *httpPublisher) OnPublished(cl *mqtt.Client, _ packets.Packet) {
	if !cl.Net.Inline {
		return
	}
	if done, ok := p.calls.Load(cl); ok {
		done.(*atomic.Bool).Store(true)
	}
}

// publish hands pk to mochi as clientID's publish and returns once every hook took it and every
// subscriber has its copy: errNotPublished if a hook refused it.
func (p *httpPublisher) publish(clientID string, pk packets.Packet) error {
	cl := p.clients.Get().(*mqtt.Client)
	defer p.clients.Put(cl)
	cl.ID = clientID
	var done atomic.Bool
	p.calls.Store(cl, &done)
	defer p.calls.Delete(cl)
	if err := p.server.InjectPacket(cl, pk); err != nil {
		return err
	}
	if !done.Load() {
		return errNotPublished
	}
	return nil
}

package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/idmq/idmq/mochifix"
	"github.com/idmq/idmq/refusal"
)

// Hook wires a node's mochi server into the cluster: every publish a client makes here goes to the stream (its
// PUBACK/PUBREC only after JetStream's ack, see ackGate), every message other nodes published is delivered here
// through one ordered consumer, retained messages follow the idmq-retained bucket, and shared subscriptions are
// served by their group's consumer (sharing, shared.go). Add it as the last of
// mochifix.Options.Hooks, after authentication and ACL: a publish they refuse is never routed.
type Hook struct {
	mqtt.HookBase
	c       *Cluster
	server  *mqtt.Server
	log     *slog.Logger
	metrics *hookMetrics

	injector *mqtt.Client // the inline client that delivers other nodes' messages; never routed again
	gates    sync.Map     // *mqtt.Client -> *ackGate
	retained *retainedSync
	owners   *owners
	wills    *wills
	identity func(*mqtt.Client) string
	consumer *Consumer
	inBatch  bool // deliver is inside a batch (holds routeMu); only the routing consumer's goroutine uses it
	shared   *sharing
	sessions *sessions
}

// HookOptions complete a Hook.
type HookOptions struct {
	// Identity names the user a connecting client authenticated as (set by the authentication hook, which
	// runs first): only the same user may take over a client id held on another node.
	Identity func(*mqtt.Client) string
	// Registerer, if set, receives the idmq_cluster_* routing metrics.
	Registerer prometheus.Registerer
	// ReadAllowed is the ACL's read check (mochi's OnACLCheck with write false) for messages a resumed
	// session gets from the stream, which bypass mochi's delivery (nil: nothing is replayed), and for shared
	// subscription deliveries, to tell a refused one (dropped) from one that found no room (given back).
	ReadAllowed func(cl *mqtt.Client, topic string, write bool) bool
}

var _ mqtt.Hook = (*Hook)(nil)

// NewHook builds the hook for server; call Start once server.Serve ran, before clients are let in.
func NewHook(c *Cluster, server *mqtt.Server, o HookOptions) *Hook {
	inj := server.NewClient(nil, "cluster", "", true)
	inj.Properties.ProtocolVersion = 5 // keep MQTT 5 properties; mochi strips them for 3.1.1 subscribers
	h := &Hook{
		c:        c,
		server:   server,
		log:      c.log,
		metrics:  newHookMetrics(o.Registerer),
		injector: inj,
		retained: newRetainedSync(c, server),
		identity: o.Identity,
	}
	if h.identity == nil {
		h.identity = func(cl *mqtt.Client) string { return string(cl.Properties.Username) }
	}
	h.owners = newOwners(c, server, h.metrics.takeovers.Inc)
	h.shared = newSharing(c, server)
	h.shared.readAllowed = o.ReadAllowed
	h.sessions = newSessions(h, o.ReadAllowed)
	h.wills = newWills(c, server, h.owners)
	h.owners.beforeTakeover = h.wills.takenOver
	return h
}

func (h *Hook) ID() string { return "idmq-cluster" }

// RoutingClient is the inline client that delivers other nodes' messages here. Their publishers were
// acknowledged when JetStream stored them, so nothing upstream slows down for a subscriber here that is behind:
// register it with mochifix.Fixes.HoldInline, or a burst (a stalled routing consumer's backlog after a node's
// loss) overruns subscribers' windows and mochi drops what does not fit.
func (h *Hook) RoutingClient() *mqtt.Client { return h.injector }

func (h *Hook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnect, mqtt.OnPacketRead, mqtt.OnPublish, mqtt.OnRetainMessage, mqtt.OnWillSent, mqtt.OnDisconnect,
		mqtt.OnPublished, mqtt.OnSessionEstablish, mqtt.OnSessionEstablished, mqtt.OnSubscribed,
		mqtt.OnUnsubscribed, mqtt.OnQosComplete, mqtt.OnPacketEncode:
		return true
	}
	return sharingEvents(b)
}

// Start loads the cluster's retained messages into mochi, then follows the bucket and starts routing other
// nodes' messages in. It returns once the retained messages are loaded, so a node started later serves them to
// its first subscriber.
func (h *Hook) Start(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, h.c.opts.StartTimeout)
	defer cancel()
	if err := h.retained.start(ctx); err != nil {
		return err
	}
	if err := h.owners.start(ctx); err != nil {
		h.retained.stop()
		return err
	}
	k, err := h.c.Consume(ctx, ConsumeOptions{}, h.deliver)
	if err == nil {
		err = h.wills.start()
	}
	if err != nil {
		if k != nil {
			k.Stop()
		}
		h.retained.stop()
		h.owners.stop()
		return err
	}
	h.consumer = k
	h.shared.start()
	h.sessions.start()
	return nil
}

// Stop ends routing in and the retained watch.
func (h *Hook) Stop() error {
	h.sessions.close()
	if h.consumer != nil {
		h.consumer.Stop()
	}
	h.shared.stop()
	h.retained.stop()
	h.owners.stop()
	h.wills.stop()
	return nil
}

// OnConnect claims the client id for this node: a connection of the same client on another node ends, another
// user's client id is refused (ClientIDTaken), and a node that cannot reach the bucket refuses the client.
func (h *Hook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	var err error
	if !pk.Connect.Clean { // before the claim, so that a refusal here takes no connection over
		err = h.sessions.readable(cl.ID)
	}
	var existed bool
	if err == nil {
		existed, err = h.owners.claim(cl, h.identity(cl))
	}
	if err == nil {
		if existed {
			h.sessions.hadOwner.Store(cl, struct{}{})
		}
		h.wills.track(cl, pk)
		return nil
	}
	kind := refusal.ClusterUnavailable
	if errors.Is(err, errClientIDTaken) {
		kind = refusal.ClientIDTaken
	}
	h.log.Log(context.Background(), refusal.Lookup(kind).Level, "connection refused", "client", cl.ID, "err", err)
	if code, send := refusal.Connack(kind, cl.Properties.ProtocolVersion); send {
		_ = h.server.SendConnack(cl, code, false, nil)
	}
	return refusal.Err(kind)
}

// OnPublish sends a client's publish to the stream. A QoS 1/2 publish is acknowledged only after JetStream's
// ack: on a connection mochifix wraps, the ack waits in the connection's gate while the read loop goes on;
// otherwise (websocket, inline publishes) here. A publish the cluster did not take closes the connection, its
// ack unsent, so the client sends it again; a QoS 0 publish is delivered locally whatever happens.
func (h *Hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl == h.injector || cl == h.shared.injector {
		return pk, nil
	}
	// No DedupID: a publish is never sent to the stream twice (a failed one closes the connection and the client
	// sends it again as a new message), and a message id costs every replica a header parse and a dedup entry.
	msg := messageOf(cl.ID, pk)
	if pk.FixedHeader.Qos == 2 { // the stream's copy names the second mochi stamped (qos2Log's fingerprint)
		if now := h.c.opts.Now(); now.Unix() == pk.Created {
			msg.Created = now
		} else {
			msg.Created = time.Unix(pk.Created, 0)
		}
	}
	if pk.FixedHeader.Retain {
		if err := h.retained.put(&msg); err != nil {
			return h.refuse(cl, pk, err)
		}
	}
	start := time.Now()
	h.sessions.gate.enter(cl) // until OnPublished: in the stream, not yet delivered here
	ack, err := h.c.PublishAsync(&msg)
	if err != nil {
		if pk.FixedHeader.Qos > 0 { // refused: mochi will not deliver it (QoS 0 is, and calls OnPublished)
			h.sessions.gate.exit(cl)
		}
		return h.refuse(cl, pk, err)
	}
	h.metrics.out.Inc()
	if pk.FixedHeader.Qos == 0 {
		return pk, nil
	}
	if g := h.gateOf(cl); g != nil {
		g.expect(g.wireID, ack)
		return pk, nil
	}
	if _, err := ack.Wait(context.Background()); err != nil { // bounded by OpTimeout
		h.sessions.gate.exit(cl)
		return h.refuse(cl, pk, err)
	}
	h.metrics.latency.Observe(time.Since(start).Seconds())
	return pk, nil
}

// refuse drops a publish the cluster did not take. QoS 0 is still delivered here (at most once); QoS 1/2 ends
// the connection unacknowledged: mochi would acknowledge a 3.1.1 client whatever error a hook returns.
func (h *Hook) refuse(cl *mqtt.Client, pk packets.Packet, err error) (packets.Packet, error) {
	h.log.Warn("cluster: publish not routed", "client", cl.ID, "qos", pk.FixedHeader.Qos, "err", err)
	if pk.FixedHeader.Qos == 0 {
		return pk, nil
	}
	if !cl.Net.Inline {
		cl.Stop(fmt.Errorf("cluster: publish not stored: %w", err))
	}
	return pk, packets.ErrRejectPacket
}

// OnPacketRead notes the packet id of a QoS 1/2 publish as the client sent it: mochifix may give the publish
// another id inside mochi (packetidspace.go) and translate its PUBACK/PUBREC back, so the gate must expect the
// client's id. It runs before mochifix's hooks (the Hook is one of Options.Hooks), on the client's read loop,
// as OnPublish does.
// A PUBREC of a persistent session's QoS 2 delivery is stored first (qos2Pubrec).
func (h *Hook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type == packets.Publish && pk.FixedHeader.Qos > 0 && !cl.Net.Inline {
		if g := h.gateOf(cl); g != nil {
			g.wireID = pk.PacketID
		}
	}
	if pk.FixedHeader.Type == packets.Pubrec && !cl.Net.Inline {
		pk, _ = h.sessions.qos2Pubrec(cl, pk)
	}
	return pk, nil
}

// OnPacketEncode holds a QoS 2 PUBLISH to a persistent session until its delivery is stored (qos2Encode).
func (h *Hook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Publish && pk.FixedHeader.Qos == 2 {
		h.sessions.qos2Encode(cl, &pk)
	}
	return pk
}

// gateOf returns cl's ack gate, installing it on the first routed QoS 1/2 publish; nil if cl's connection is
// not a mochifix.CoalescingConn.
func (h *Hook) gateOf(cl *mqtt.Client) *ackGate {
	if g, ok := h.gates.Load(cl); ok {
		return g.(*ackGate)
	}
	conn, ok := mochifix.CoalescingConnOf(cl.Net.Conn)
	if !ok {
		return nil
	}
	g := newAckGate(conn)
	g.latency = h.metrics.latency
	conn.SetAckGate(g)
	h.gates.Store(cl, g)
	return g
}

// OnDisconnect drops the client's gate: acks still held are for a connection that is gone.
// OnDisconnect also gives up the client's claim when its session ends here.
func (h *Hook) OnDisconnect(cl *mqtt.Client, _ error, expire bool) {
	if g, ok := h.gates.LoadAndDelete(cl); ok {
		g.(*ackGate).close()
	}
	h.sessions.gate.forget(cl) // a publish its connection's failure kept from mochi's delivery
	if !cl.Net.Inline {
		h.sessions.disconnected(cl, expire)
		h.owners.release(cl, expire)
		h.wills.ended(cl)
	}
	h.shared.disconnected(cl)
}

// OnWillSent routes a Will mochi published here to the other nodes (mochi delivers it locally without
// OnPublish).
func (h *Hook) OnWillSent(cl *mqtt.Client, pk packets.Packet) {
	msg := messageOf(cl.ID, pk)
	if pk.FixedHeader.Retain {
		if err := h.retained.put(&msg); err != nil {
			h.log.Warn("cluster: retained will not stored", "client", cl.ID, "err", err)
		}
	}
	if _, err := h.c.PublishAsync(&msg); err != nil {
		h.log.Warn("cluster: will not routed", "client", cl.ID, "err", err)
	}
}

// OnRetainMessage keeps this node on the bucket's latest value when another node's retained publish on the
// same topic overtook this one in the bucket (see retainedSync), and undoes mochi's store of a routed message.
func (h *Hook) OnRetainMessage(cl *mqtt.Client, pk packets.Packet, _ int64) {
	if cl == h.injector {
		h.retained.afterRouted(pk.TopicName)
		return
	}
	h.retained.afterLocal(pk.TopicName)
}

// deliver hands a message another node published to local subscribers, as its publisher's publish: No Local
// compares the publishing client id, the ACL is checked per subscriber by mochi. It keeps its retain flag, so a
// Retain As Published subscriber sees it [MQTT-3.3.1-13]; mochi then stores it as retained, which
// OnRetainMessage undoes: the retained store follows the bucket only.
//
// A resumed session's hand-over pauses routing (sessions_resume.go) between stream messages, never inside a
// batch: routeMu is taken at a batch's first message and given back after its last (the routing consumer
// passes a batch's messages together, from one goroutine), so routedSeq names whole stream messages only.
func (h *Hook) deliver(d Delivery) {
	if !h.inBatch {
		h.sessions.routeMu.Lock()
	}
	h.inBatch = d.More
	if !d.More {
		defer h.sessions.routeMu.Unlock()
		defer h.sessions.routedSeq.Store(d.Seq)
	}
	pk, ok := packetOf(&d.Message, h.c.opts.Now())
	if !ok {
		return // expired on its way
	}
	h.injector.ID = d.ClientID
	if pk.FixedHeader.Qos == 2 { // OnQosPublish records its sequence for persistent sessions
		h.sessions.routing.Store(&routedMark{seq: d.Seq, created: d.Created.Unix(), origin: d.ClientID, topic: pk.TopicName,
			payload: pk.Payload})
		defer h.sessions.routing.Store(nil)
	}
	if err := h.server.InjectPacket(h.injector, pk); err != nil {
		h.log.Warn("cluster: delivering a routed message", "seq", d.Seq, "err", err)
		return
	}
	h.metrics.in.Inc()
}

// messageOf is the routed form of a publish by client id.
func messageOf(id string, pk packets.Packet) Message {
	p := &pk.Properties
	m := Message{
		Topic: pk.TopicName, Payload: pk.Payload, QoS: pk.FixedHeader.Qos, Retain: pk.FixedHeader.Retain,
		ClientID: id, MessageExpiry: p.MessageExpiryInterval, ContentType: p.ContentType,
		ResponseTopic: p.ResponseTopic, CorrelationData: p.CorrelationData,
	}
	if p.PayloadFormatFlag {
		m.HasPayloadFormat, m.PayloadFormat = true, p.PayloadFormat
	}
	for _, up := range p.User {
		m.UserProperties = append(m.UserProperties, UserProperty{Key: up.Key, Value: up.Val})
	}
	return m
}

// packetOf is the publish of a routed message, with its expiry reduced by the time it spent on its way; false
// if it expired [MQTT-3.3.2-5].
func packetOf(m *Message, now time.Time) (packets.Packet, bool) {
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: m.QoS, Retain: m.Retain},
		TopicName:   m.Topic,
		Payload:     m.Payload,
		Created:     m.Created.Unix(),
	}
	if m.QoS > 0 {
		pk.PacketID = 1 // validity only: an inline publish is never acknowledged
	}
	p := &pk.Properties
	if m.MessageExpiry > 0 {
		left := int64(m.MessageExpiry) - int64(now.Sub(m.Created)/time.Second)
		if left <= 0 {
			return pk, false
		}
		p.MessageExpiryInterval = uint32(left)
	}
	if m.HasPayloadFormat {
		p.PayloadFormat, p.PayloadFormatFlag = m.PayloadFormat, true
	}
	p.ContentType, p.ResponseTopic = m.ContentType, m.ResponseTopic
	if len(m.CorrelationData) > 0 {
		p.CorrelationData = bytes.Clone(m.CorrelationData)
	}
	for _, up := range m.UserProperties {
		p.User = append(p.User, packets.UserProperty{Key: up.Key, Val: up.Value})
	}
	return pk, true
}

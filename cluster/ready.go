package cluster

import (
	"context"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/idmq/idmq/mochifix"
	"github.com/idmq/idmq/refusal"
)

// DisconnectGrace is how long a node that lost its cluster keeps its connected clients: a NATS reconnect or a
// leader election usually ends within it. After it, the node ends them (MQTT 5: DISCONNECT 0x9C Use another
// server) so they fail over to a node that is part of the cluster instead of talking to a split brain.
// New CONNECTs are refused at once, for as long as the node is not ready.
const DisconnectGrace = 10 * time.Second

// ReadyHook refuses CONNECTs while the node is not ready (CONNACK 0x88, 3.1.1: 0x03) and disconnects its
// clients when the node stays not ready for the grace. Add it before authentication: a refusal here costs no
// signature check. Pass its Changed to Options.OnReadyChange (through a closure: the hook is built after Start).
type ReadyHook struct {
	mqtt.HookBase
	server  *mqtt.Server
	ready   func() bool
	grace   time.Duration
	refused prometheus.Counter

	mu    sync.Mutex
	timer *time.Timer
}

var _ mqtt.Hook = (*ReadyHook)(nil)

// NewReadyHook builds the hook; ready reports the node's readiness (Cluster.Ready). grace 0 means
// DisconnectGrace. reg may be nil.
func NewReadyHook(server *mqtt.Server, ready func() bool, grace time.Duration, reg prometheus.Registerer) *ReadyHook {
	if grace <= 0 {
		grace = DisconnectGrace
	}
	h := &ReadyHook{server: server, ready: ready, grace: grace,
		refused: prometheus.NewCounter(prometheus.CounterOpts{Name: "idmq_cluster_refused_total",
			Help: "CONNECTs refused because this node was not connected to its cluster."})}
	if reg != nil {
		reg.MustRegister(h.refused)
	}
	return h
}

func (h *ReadyHook) ID() string { return "idmq-cluster-ready" }

func (h *ReadyHook) Provides(b byte) bool { return b == mqtt.OnConnect }

// OnConnect refuses while the node is not ready.
func (h *ReadyHook) OnConnect(cl *mqtt.Client, _ packets.Packet) error {
	if h.ready() {
		return nil
	}
	h.refused.Inc()
	h.Log.Log(context.Background(), refusal.Lookup(refusal.ClusterUnavailable).Level,
		"connection refused: not connected to the cluster", "remote", cl.Net.Remote, "client", cl.ID)
	if code, send := refusal.Connack(refusal.ClusterUnavailable, cl.Properties.ProtocolVersion); send {
		_ = h.server.SendConnack(cl, code, false, nil)
	}
	return refusal.Err(refusal.ClusterUnavailable)
}

// Changed is told when readiness flips: losing it starts the grace, regaining it cancels it.
func (h *ReadyHook) Changed(ready bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.timer != nil {
		h.timer.Stop()
		h.timer = nil
	}
	if !ready {
		h.timer = time.AfterFunc(h.grace, h.graceOver)
	}
}

func (h *ReadyHook) graceOver() {
	if h.ready() {
		return
	}
	code := refusal.Disconnect(refusal.ClusterUnavailable)
	n := 0
	for _, cl := range h.server.Clients.GetAll() {
		if cl.Net.Inline || cl.Closed() {
			continue
		}
		if mochifix.Disconnect(cl, code, code.Reason) == nil {
			n++
		}
	}
	if h.Log != nil {
		h.Log.Warn("cluster: still not connected after the grace: clients disconnected", "grace", h.grace, "clients", n)
	}
}

// Stop cancels a pending grace.
func (h *ReadyHook) Stop() error {
	h.Changed(true)
	return nil
}

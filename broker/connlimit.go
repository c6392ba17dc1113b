package broker

import (
	"context"
	"net"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/idmq/idmq/refusal"
)

// connectLimitHook refuses CONNECTs beyond a per-IP token bucket before any token is verified, so a flood
// from one address costs a map lookup, not a signature check. It runs before the auth hook.
type connectLimitHook struct {
	mqtt.HookBase
	server  *mqtt.Server
	limit   *ipLimiter
	refused prometheus.Counter
}

func newConnectLimitHook(server *mqtt.Server, rl RateLimitConfig, reg prometheus.Registerer) *connectLimitHook {
	h := &connectLimitHook{
		server: server,
		limit:  newIPLimiter(rl.PerSecond, rl.Burst),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "idmq_connect_rate_limited_total", Help: "CONNECTs refused by mqtt.max_connect_rate.",
		}),
	}
	reg.MustRegister(h.refused)
	return h
}

func (h *connectLimitHook) ID() string { return "idmq-connect-limit" }

func (h *connectLimitHook) Provides(b byte) bool { return b == mqtt.OnConnect }

func (h *connectLimitHook) OnConnect(cl *mqtt.Client, _ packets.Packet) error {
	host, _, err := net.SplitHostPort(cl.Net.Remote)
	if err != nil {
		host = cl.Net.Remote
	}
	if ok, _ := h.limit.allow(host); ok {
		return nil
	}
	h.refused.Inc()
	h.Log.Log(context.Background(), refusal.Lookup(refusal.RateLimited).Level, "connection refused: connect rate exceeded",
		"remote", cl.Net.Remote, "client", cl.ID)
	// MQTT 3.1.1 has no return code for this: refusal.Table says close without a CONNACK.
	if code, send := refusal.Connack(refusal.RateLimited, cl.Properties.ProtocolVersion); send {
		_ = h.server.SendConnack(cl, code, false, nil)
	}
	return refusal.Err(refusal.RateLimited)
}

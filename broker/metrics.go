package broker

import (
	"errors"
	"runtime"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Version is set at build time (-ldflags "-X github.com/idmq/idmq/broker.Version=...").
var Version = "dev"

// metricsHook counts connection outcomes. Message and byte counters come from mochi's own atomic
// counters (server.Info), read at scrape time, so the publish path pays nothing for them.
type metricsHook struct {
	mqtt.HookBase
	connects    *prometheus.CounterVec
	disconnects *prometheus.CounterVec
}

func newMetricsHook(reg *prometheus.Registry, server *mqtt.Server) *metricsHook {
	h := &metricsHook{
		connects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "idmq_connects_total", Help: "CONNECT attempts answered with a CONNACK, by result.",
		}, []string{"result"}),
		disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "idmq_disconnects_total", Help: "Ends of established connections, by reason.",
		}, []string{"reason"}),
	}
	info := server.Info
	gauge := func(name, help string, v *int64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help},
			func() float64 { return float64(atomic.LoadInt64(v)) })
	}
	counter := func(name, help string, v *int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(atomic.LoadInt64(v)) })
	}
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "idmq_build_info", Help: "Build information; the value is always 1.",
		ConstLabels: prometheus.Labels{"version": Version, "goversion": runtime.Version(), "mochi": mqtt.Version},
	})
	buildInfo.Set(1)
	reg.MustRegister(
		h.connects, h.disconnects, buildInfo,
		gauge("idmq_connected_clients", "Clients currently connected.", &info.ClientsConnected),
		gauge("idmq_subscriptions", "Active subscriptions.", &info.Subscriptions),
		gauge("idmq_retained_messages", "Retained messages held.", &info.Retained),
		gauge("idmq_inflight_messages", "QoS 1/2 messages in flight.", &info.Inflight),
		counter("idmq_messages_received_total", "PUBLISH packets received.", &info.MessagesReceived),
		counter("idmq_messages_sent_total", "PUBLISH packets sent.", &info.MessagesSent),
		counter("idmq_messages_dropped_total", "Messages dropped for slow subscribers (outbound queue full).", &info.MessagesDropped),
		counter("idmq_inflight_dropped_total", "QoS 1/2 messages dropped because the subscriber's in-flight window (mqtt.max_inflight) was full.", &info.InflightDropped),
		counter("idmq_bytes_received_total", "Bytes received from clients.", &info.BytesReceived),
		counter("idmq_bytes_sent_total", "Bytes sent to clients.", &info.BytesSent),
	)
	// Every metric idmq exposes is named idmq_…, the Go runtime's and the process's too.
	prefixed := prometheus.WrapRegistererWithPrefix("idmq_", reg)
	prefixed.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return h
}

func (h *metricsHook) ID() string { return "idmq-metrics" }

func (h *metricsHook) Provides(b byte) bool {
	return b == mqtt.OnPacketSent || b == mqtt.OnDisconnect
}

// OnPacketSent sees every CONNACK, accepted or refused by any hook, so one place counts them all.
func (h *metricsHook) OnPacketSent(_ *mqtt.Client, pk packets.Packet, _ []byte) {
	if pk.FixedHeader.Type != packets.Connack {
		return
	}
	h.connects.WithLabelValues(connackResult(pk.ReasonCode)).Inc()
}

func (h *metricsHook) OnDisconnect(_ *mqtt.Client, err error, _ bool) {
	h.disconnects.WithLabelValues(disconnectReason(err)).Inc()
}

// connackResult keeps the label set small and stable: v3 and v5 codes map to one name each.
func connackResult(code byte) string {
	switch code {
	case 0x00:
		return "success"
	case 0x04, 0x86, 0x8C:
		return "bad_credentials"
	case 0x05, 0x87:
		return "not_authorized"
	case 0x02, 0x85:
		return "client_id_rejected"
	case 0x03, 0x88, 0x89, 0x97, 0x9F:
		return "server_unavailable"
	default:
		return "other"
	}
}

func disconnectReason(err error) string {
	var code packets.Code
	switch {
	case err == nil:
		return "client"
	case errors.As(err, &code):
		switch code.Code {
		case packets.ErrSessionTakenOver.Code:
			return "taken_over"
		case packets.ErrMaxConnectTime.Code:
			return "token_expired"
		case packets.ErrAdministrativeAction.Code:
			return "admin"
		case packets.ErrServerShuttingDown.Code:
			return "shutdown"
		case packets.ErrKeepAliveTimeout.Code:
			return "keepalive"
		}
		return "protocol"
	default: // EOF, reset, deadline: the network went away without a DISCONNECT
		return "connection_lost"
	}
}

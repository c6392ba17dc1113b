package cluster

import "github.com/prometheus/client_golang/prometheus"

// hookMetrics are the idmq_cluster_* series of routing and takeovers; nodes up is the broker's.
type hookMetrics struct {
	out, in, takeovers prometheus.Counter
	latency            prometheus.Histogram
}

func newHookMetrics(reg prometheus.Registerer) *hookMetrics {
	m := &hookMetrics{
		out: prometheus.NewCounter(prometheus.CounterOpts{Name: "idmq_cluster_forwarded_out_total",
			Help: "Publishes of this node's clients sent to the cluster's stream."}),
		in: prometheus.NewCounter(prometheus.CounterOpts{Name: "idmq_cluster_forwarded_in_total",
			Help: "Messages published on other nodes delivered to this node's subscribers."}),
		takeovers: prometheus.NewCounter(prometheus.CounterOpts{Name: "idmq_cluster_takeovers_total",
			Help: "Connections on this node ended because their client id connected on another node."}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "idmq_cluster_publish_seconds",
			Help:    "Time from sending a QoS 1/2 publish to the stream to JetStream's ack.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
	}
	if reg != nil {
		reg.MustRegister(m.out, m.in, m.takeovers, m.latency)
	}
	return m
}

package events

import "github.com/prometheus/client_golang/prometheus"

// Delivery results and drop reasons, the label values of the metrics.
const (
	resultDelivered = "delivered" // the receiver answered 2xx
	resultFailed    = "failed"    // an attempt failed (network, timeout, non-2xx); the event is retried

	dropQueueFull = "queue_full" // the queue was at max_queue: the oldest event made room
	dropExpired   = "expired"    // still undelivered retry_for after it happened
	dropShutdown  = "shutdown"   // in memory only (no persistent store) when idmq stopped
)

type metrics struct {
	deliveries *prometheus.CounterVec
	dropped    *prometheus.CounterVec
	depth      *prometheus.GaugeVec
	storeErrs  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "idmq_webhook_deliveries_total",
			Help: "Webhook delivery attempts, by webhook and result (delivered, failed: retried later).",
		}, []string{"webhook", "result"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "idmq_webhook_dropped_total",
			Help: "Events a webhook never received, by reason (queue_full, expired after retry_for, shutdown: memory-only queue at exit).",
		}, []string{"webhook", "reason"}),
		depth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "idmq_webhook_queue_depth",
			Help: "Events waiting for delivery, by webhook.",
		}, []string{"webhook"}),
		storeErrs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "idmq_webhook_store_errors_total",
			Help: "Failed writes of the persisted webhook queues (the events are still delivered from memory).",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.deliveries, m.dropped, m.depth, m.storeErrs} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// webhookMetrics are one webhook's series, bound once.
type webhookMetrics struct {
	delivered, failed            prometheus.Counter
	queueFull, expired, shutdown prometheus.Counter
	depth                        prometheus.Gauge
}

func (m *metrics) forWebhook(name string) webhookMetrics {
	return webhookMetrics{
		delivered: m.deliveries.WithLabelValues(name, resultDelivered),
		failed:    m.deliveries.WithLabelValues(name, resultFailed),
		queueFull: m.dropped.WithLabelValues(name, dropQueueFull),
		expired:   m.dropped.WithLabelValues(name, dropExpired),
		shutdown:  m.dropped.WithLabelValues(name, dropShutdown),
		depth:     m.depth.WithLabelValues(name),
	}
}

package authhook

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// authMetrics counts CONNECT authentication outcomes as idmq_auth_total{provider,result,reason}. Labels stay
// bounded: provider is a configured name, "anonymous" or "unknown"; reason is a Reason or "ok" (the Metric
// column of refusal.Table names each failure's series).
type authMetrics struct {
	total *prometheus.CounterVec
}

func newAuthMetrics(reg prometheus.Registerer) (*authMetrics, error) {
	total := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "idmq_auth_total",
		Help: "MQTT CONNECT authentication attempts by provider, result (success, failure) and reason.",
	}, []string{"provider", "result", "reason"})
	if reg != nil {
		if err := reg.Register(total); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, err
			}
			total = are.ExistingCollector.(*prometheus.CounterVec)
		}
	}
	return &authMetrics{total: total}, nil
}

func (m *authMetrics) observe(provider string, reason Reason) {
	if provider == "" {
		provider = "unknown"
	}
	if reason == "" {
		m.total.WithLabelValues(provider, "success", "ok").Inc()
		return
	}
	m.total.WithLabelValues(provider, "failure", string(reason)).Inc()
}

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
	// fetches counts key set fetches by provider and result (success, failure): idmq_jwks_fetch_total.
	fetches *prometheus.CounterVec
}

func newAuthMetrics(reg prometheus.Registerer, h *Hook) (*authMetrics, error) {
	m := &authMetrics{
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "idmq_auth_total",
			Help: "MQTT CONNECT authentication attempts by provider, result (success, failure) and reason.",
		}, []string{"provider", "result", "reason"}),
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "idmq_jwks_fetch_total",
			Help: "Fetches of identity providers' key sets (refreshes, unknown kids, manual refreshes), by provider and result (success, failure).",
		}, []string{"provider", "result"}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.total, err = registerVec(reg, m.total); err != nil {
		return nil, err
	}
	if m.fetches, err = registerVec(reg, m.fetches); err != nil {
		return nil, err
	}
	if err := reg.Register(keyAgeCollector{h}); err != nil && !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
		return nil, err
	}
	return m, nil
}

func registerVec(reg prometheus.Registerer, vec *prometheus.CounterVec) (*prometheus.CounterVec, error) {
	if err := reg.Register(vec); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return nil, err
		}
		return are.ExistingCollector.(*prometheus.CounterVec), nil
	}
	return vec, nil
}

func (m *authMetrics) fetched(provider string, err error) {
	if m == nil {
		return
	}
	result := "success"
	if err != nil {
		result = "failure"
	}
	m.fetches.WithLabelValues(provider, result).Inc()
}

// keyAgeDesc is idmq_jwks_age_seconds{provider,issuer}: how old the key set in use is, from its last
// successful fetch; a provider whose keys never arrived has no sample.
var keyAgeDesc = prometheus.NewDesc("idmq_jwks_age_seconds",
	"Seconds since the key set in use was fetched, by provider and issuer.", []string{"provider", "issuer"}, nil)

// keyAgeCollector reads the ages at scrape time from the providers in force.
type keyAgeCollector struct{ h *Hook }

func (c keyAgeCollector) Describe(ch chan<- *prometheus.Desc) { ch <- keyAgeDesc }

func (c keyAgeCollector) Collect(ch chan<- prometheus.Metric) {
	ps := c.h.ps()
	if ps == nil {
		return
	}
	now := c.h.now()
	for _, rks := range ps.remotes {
		for _, rk := range rks {
			if at := rk.lastSuccessAt(); !at.IsZero() {
				ch <- prometheus.MustNewConstMetric(keyAgeDesc, prometheus.GaugeValue, now.Sub(at).Seconds(), rk.provider, rk.issuer)
			}
		}
	}
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

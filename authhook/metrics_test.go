package authhook

import (
	"log/slog"
	"testing"
	"time"

	"github.com/idmq/idmq/internal/testkit"
	"github.com/prometheus/client_golang/prometheus"
)

// TestKeyFetchMetrics: each key set fetch is counted by provider and result, and the age of the key set in
// use is exported once it was fetched.
func TestKeyFetchMetrics(t *testing.T) {
	idp := testkit.NewIdP(t, testkit.NewKey(t, "ES256", "k1"))
	reg := prometheus.NewRegistry()
	h, err := New(Options{Config: oidcConfig(idp.Issuer()), Registerer: reg, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Stop()
	waitReady(t, h)
	testkit.Eventually(t, 10*time.Second, func() bool { return counterValue(h.metrics.fetches.WithLabelValues("corp", "success")) == 1 }, "first key fetch counted")
	if err := h.RefreshProvider("corp"); err != nil {
		t.Fatalf("manual refresh: %v", err)
	}
	if err := h.RefreshProvider("corp"); err != ErrRefreshTooSoon {
		t.Fatalf("a second manual refresh within unknown_kid_cooldown: %v, want ErrRefreshTooSoon", err)
	}
	if n := counterValue(h.metrics.fetches.WithLabelValues("corp", "success")); n != 2 {
		t.Fatalf("%v successful fetches counted, want 2 (start, manual refresh)", n)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	ages := 0
	for _, f := range families {
		if f.GetName() == "idmq_jwks_age_seconds" {
			for _, m := range f.GetMetric() {
				if v := m.GetGauge().GetValue(); v < 0 || v > 60 {
					t.Fatalf("key set age %v s", v)
				}
				ages++
			}
		}
	}
	if ages != 1 {
		t.Fatalf("%d idmq_jwks_age_seconds samples, want 1 (one issuer)", ages)
	}
}

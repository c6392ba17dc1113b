package broker

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHealthAndReadiness(t *testing.T) {
	// A provider whose JWKS endpoint was never reachable: the broker is up but "degraded".
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	cfg, err := Parse([]byte(fmt.Sprintf(`
data_dir: %s
listeners: [{type: tcp, address: "127.0.0.1:0"}]
http: {address: "127.0.0.1:0"}
storage: {type: memory}
auth:
  providers:
    - {name: local, type: local}
    - {name: down, type: oidc, issuer: %s, jwks_url: %s/jwks}
acl: {rules: [{topic: "users/%%u/#", access: pubsub}]}
`, t.TempDir(), dead, dead)), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	h := b.routes()
	get := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		return rec.Code, rec.Body.String()
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Fatalf("/healthz %d", code)
	}
	if code, body := get("/readyz"); code != 503 || !strings.Contains(body, `"not_ready"`) {
		t.Fatalf("/readyz before Start: %d %s", code, body)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	defer b.Close(t.Context())
	code, body := get("/readyz")
	var r struct {
		Status    string `json:"status"`
		Providers []struct {
			Name  string `json:"name"`
			Ready bool   `json:"ready"`
		} `json:"providers"`
	}
	_ = json.Unmarshal([]byte(body), &r)
	if code != 200 || r.Status != "degraded" {
		t.Fatalf("/readyz with an unreachable provider: %d %s", code, body)
	}
	readiness := map[string]bool{}
	for _, p := range r.Providers {
		readiness[p.Name] = p.Ready
	}
	if !readiness["local"] || readiness["down"] {
		t.Fatalf("provider readiness %v, want local ready and down not", readiness)
	}

	// The HTTP server really listens, with the local issuer's JWKS on it.
	resp, err := http.Get("http://" + b.Addresses()["http"] + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var jwks struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&jwks); err != nil || len(jwks.Keys) != 1 {
		t.Fatalf("jwks: %v %v", jwks, err)
	}
	code, body = get("/metrics")
	if code != 200 || !strings.Contains(body, "idmq_build_info{") || !strings.Contains(body, "idmq_connected_clients 0") ||
		!strings.Contains(body, "idmq_go_goroutines ") {
		t.Fatalf("/metrics: %d", code)
	}
	for _, line := range strings.Split(body, "\n") {
		if line != "" && !strings.HasPrefix(line, "#") && !strings.HasPrefix(line, "idmq_") {
			t.Fatalf("metric not named idmq_…: %q", line)
		}
	}
}

package e2e

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/idmq/idmq/internal/testkit"
)

// sdkSuccessConnects reads idmq_connects_total{result="success"} from the lines browserMetric returns.
func sdkSuccessConnects(t *testing.T, lines string) int {
	t.Helper()
	for _, l := range strings.Split(lines, "\n") {
		if v, ok := strings.CutPrefix(l, `idmq_connects_total{result="success"} `); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("metric line %q: %v", l, err)
			}
			return int(f)
		}
	}
	return 0
}

// TestSDKBrowserWSS: in headless Chromium, a page using the SDK exchanges an IdP token cross-origin, connects
// over WSS, receives a message, refreshes in place once without reconnecting and receives another.
func TestSDKBrowserWSS(t *testing.T) {
	jsDir := sdkRequireTooling(t)
	tools := browserRequireTooling(t)
	op := startOIDCProvider(t, oidcOptions{})
	idpToken := op.ClientCredentialsToken(t, "mqtt://idmq")

	dir := t.TempDir()
	ca := newTestCA(t, dir)
	certFile, keyFile := filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
	ca.issue(t, certFile, keyFile, 2)

	mux := http.NewServeMux()
	pageDir := filepath.Join(repoRoot(), "e2e", "sdk", "page")
	mux.Handle("GET /{$}", serveFile(filepath.Join(pageDir, "index.html"), "text/html; charset=utf-8"))
	mux.Handle("GET /app.js", serveFile(filepath.Join(pageDir, "app.js"), "text/javascript"))
	mux.Handle("GET /mqtt.esm.js", serveFile(filepath.Join(jsDir, "node_modules", "mqtt", "dist", "mqtt.esm.js"), "text/javascript"))
	mux.Handle("GET /sdk/", http.StripPrefix("/sdk/", http.FileServer(http.Dir(filepath.Join(jsDir, "src")))))
	mux.HandleFunc("GET /idp-token", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		io.WriteString(w, idpToken)
	})
	page := httptest.NewServer(mux)
	t.Cleanup(page.Close)

	apiPort := testkit.FreePort(t)
	p := newIdmq(t, fmt.Sprintf(`
listeners:
  - {type: tcp, address: "127.0.0.1:{{tcp}}"}
  - {type: wss, address: "127.0.0.1:{{wss}}", cert_file: %[1]s, key_file: %[2]s}
http:
  address: "127.0.0.1:%[3]d"
  cert_file: %[1]s
  key_file: %[2]s
  cors_origins: ["%[4]s"]
auth:
  exchange: {ttl: %[6]s}
  providers:
    - {name: local, type: local}
    - {name: corp, type: oidc, issuer: %[5]s, audiences: ["mqtt://idmq"], username_claim: email}
acl:
  rules:
    - {topic: "users/%%u/#", access: pubsub}
`, certFile, keyFile, apiPort, page.URL, op.Issuer(), sdkExchangeTTL))
	p.start()
	api := fmt.Sprintf("https://127.0.0.1:%d", apiPort)
	browserWaitReady(t, api, ca)
	wss := fmt.Sprintf("wss://127.0.0.1:%d/mqtt", p.ports["wss"])

	pub, code := connectV3(t, v3Options(p.brokerURL("tcp"), "sdk-browser-publisher", "jwt", idpToken, nil))
	if code != 0 {
		t.Fatalf("publisher CONNACK %d", code)
	}
	b := startBrowser(t, tools, browserSPKIHash(t, certFile))
	shots := browserArtifactsDir(t)
	connectsBefore := sdkSuccessConnects(t, browserMetric(t, api, ca, "idmq_connects_total"))

	b.call(t, map[string]any{"cmd": "open", "url": page.URL + "/?api=" + url.QueryEscape(api) + "&wss=" +
		url.QueryEscape(wss) + "&refreshBefore=" + sdkRefreshBefore})
	r := b.waitState(t, "subscribed", "error")
	if r.State != "subscribed" || r.DOM.User != sdkUser {
		t.Fatalf("page state %q user %q, want subscribed as %q; error: %q", r.State, r.DOM.User, sdkUser, r.DOM.Error)
	}
	topic := "users/" + sdkUser + "/inbox"
	publish := func(text string) {
		t.Helper()
		waitToken(t, pub.Publish(topic, 1, false, text), "publish")
	}
	publish("before the refresh")
	if r = b.waitState(t, "received-1", "error"); r.State != "received-1" {
		t.Fatalf("page state %q, want received-1; error %q", r.State, r.DOM.Error)
	}
	started := time.Now()
	// The refresh is due 10 s after connecting; the wait covers it and a loaded machine.
	if r = b.waitState(t, "refreshed-1", "error"); r.State != "refreshed-1" {
		t.Fatalf("page state %q, want refreshed-1; error %q", r.State, r.DOM.Error)
	}
	t.Logf("in-place refresh in Chromium after %s more", time.Since(started).Round(time.Millisecond))
	publish("after the refresh")
	r = b.waitState(t, "received-2", "error")
	b.call(t, map[string]any{"cmd": "screenshot", "path": filepath.Join(shots, "sdk-refreshed.png")})
	want := []string{topic + ": before the refresh", topic + ": after the refresh"}
	if r.State != "received-2" || !slices.Equal(r.DOM.Messages, want) {
		t.Fatalf("page state %q messages %q (error %q), want received-2 with %q", r.State, r.DOM.Messages, r.DOM.Error, want)
	}
	if d := sdkSuccessConnects(t, browserMetric(t, api, ca, "idmq_connects_total")) - connectsBefore; d != 1 {
		t.Errorf("%d successful CONNECTs while the page ran, want 1: the refresh reconnected", d)
	}
}

package e2e

import (
	"bufio"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/idmq/idmq/internal/testkit"
)

// The browser proof of the token exchange: a static page (e2e/browser/page) in Debian's Chromium, driven by
// playwright-core (e2e/browser/driver.mjs), exchanges an identity provider's token at idmq's HTTPS API with a
// cross-origin fetch and connects with MQTT.js over WSS.

const (
	browserChromium = "/usr/bin/chromium"
	// Each page step is a few hundred milliseconds on loopback; the bound absorbs a loaded CI machine.
	browserStepTimeout = 15 * time.Second
)

// TestBrowserExchangeOverWSS: a page on an origin listed in http.cors_origins gets MQTT credentials from the
// exchange endpoint and receives, over WSS, what a Go client publishes to users/<me>/...; a page on another
// origin is stopped by the browser's CORS check and says so.
func TestBrowserExchangeOverWSS(t *testing.T) {
	tools := browserRequireTooling(t)
	op := startOIDCProvider(t, oidcOptions{})
	// The provider's token endpoint sends no CORS headers (oidc-provider's default clientBasedCORS refuses every
	// origin) and offers only client_credentials, so the browser cannot sign in against it directly: the test
	// performs the real grant and the page's own server hands the token to the page, as an app backend would.
	idpToken := op.ClientCredentialsToken(t, "mqtt://idmq")
	const user = "e2e-service@example.com" // the provider's email claim for its default client

	dir := t.TempDir()
	ca := newTestCA(t, dir)
	certFile, keyFile := filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
	ca.issue(t, certFile, keyFile, 2)

	allowedPage := browserPageServer(t, tools.pageDir, tools.mqttJS, idpToken)
	foreignPage := browserPageServer(t, tools.pageDir, tools.mqttJS, idpToken)

	// The API port is not the harness's {{http}}: its readiness probe speaks plain HTTP and this API is HTTPS.
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
  providers:
    - {name: local, type: local}
    - name: corp
      type: oidc
      issuer: %[5]s
      audiences: ["mqtt://idmq"]
      username_claim: email
acl:
  rules:
    - {topic: "users/%%u/#", access: pubsub}
`, certFile, keyFile, apiPort, allowedPage.URL, op.Issuer()))
	p.start()
	api := fmt.Sprintf("https://127.0.0.1:%d", apiPort)
	browserWaitReady(t, api, ca)
	wss := fmt.Sprintf("wss://127.0.0.1:%d/mqtt", p.ports["wss"])
	pageURL := func(origin string) string {
		return origin + "/?api=" + url.QueryEscape(api) + "&wss=" + url.QueryEscape(wss)
	}

	b := startBrowser(t, tools, browserSPKIHash(t, certFile))
	shots := browserArtifactsDir(t)

	t.Run("allowed origin exchanges and receives over WSS", func(t *testing.T) {
		b.call(t, map[string]any{"cmd": "open", "url": pageURL(allowedPage.URL)})
		r := b.waitState(t, "subscribed", "error")
		if r.State != "subscribed" {
			t.Fatalf("page state %q, want subscribed; error: %q", r.State, r.DOM.Error)
		}
		if r.DOM.User != user {
			t.Errorf("page shows MQTT user %q, want %q (the token's email claim)", r.DOM.User, user)
		}

		topic := "users/" + user + "/inbox"
		text := fmt.Sprintf("hello from Go paho %d", time.Now().UnixNano())
		pub, code := connectV3(t, v3Options(p.brokerURL("tcp"), "browser-test-publisher", "jwt", idpToken, nil))
		if code != 0 {
			t.Fatalf("publisher CONNACK %d", code)
		}
		waitToken(t, pub.Publish(topic, 1, false, text), "publish")

		r = b.waitState(t, "received", "error")
		b.call(t, map[string]any{"cmd": "screenshot", "path": filepath.Join(shots, "allowed.png")})
		if want := topic + ": " + text; len(r.DOM.Messages) != 1 || r.DOM.Messages[0] != want {
			t.Fatalf("page messages %q (state %q, error %q), want [%q]", r.DOM.Messages, r.State, r.DOM.Error, want)
		}
	})

	t.Run("foreign origin is blocked by CORS", func(t *testing.T) {
		before := browserMetric(t, api, ca, "idmq_exchange_total")
		b.call(t, map[string]any{"cmd": "open", "url": pageURL(foreignPage.URL)})
		r := b.waitState(t, "error", "connecting", "subscribed", "received")
		b.call(t, map[string]any{"cmd": "screenshot", "path": filepath.Join(shots, "foreign.png")})
		if r.State != "error" {
			t.Fatalf("page state %q from an origin not in http.cors_origins, want error", r.State)
		}
		// The page's no-cors probe reached the API, so the failure is the CORS check and not TLS or the network.
		for _, want := range []string{"blocked by CORS", "origin " + foreignPage.URL + " is not in idmq's http.cors_origins"} {
			if !strings.Contains(r.DOM.Error, want) {
				t.Errorf("page error %q does not contain %q", r.DOM.Error, want)
			}
		}
		// The preflight failed, so the browser never sent the POST: no exchange was counted, not even a refusal.
		if after := browserMetric(t, api, ca, "idmq_exchange_total"); after != before {
			t.Errorf("exchange counters changed while the foreign page ran:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	})
}

// browserTools are the paths the browser test needs.
type browserTools struct {
	chromium string
	driver   string // e2e/browser/driver.mjs
	pageDir  string // e2e/browser/page
	mqttJS   string // MQTT.js browser bundle from e2e/browser/node_modules
}

// browserRequireTooling finds Chromium, node and the npm packages; without them it skips, or fails when CI=true.
func browserRequireTooling(t *testing.T) browserTools {
	t.Helper()
	missing := func(msg string) { t.Helper(); missingTool(t, msg) }
	if _, err := os.Stat(browserChromium); err != nil {
		missing(browserChromium + " is missing: install Debian's chromium (`apt-get install -y chromium`)")
	}
	if _, err := exec.LookPath("node"); err != nil {
		missing("node is not on PATH: install Node.js >= 20, then run `npm ci --prefix e2e/browser` in the repository root")
	}
	dir := filepath.Join(repoRoot(), "e2e", "browser")
	tools := browserTools{
		chromium: browserChromium,
		driver:   filepath.Join(dir, "driver.mjs"),
		pageDir:  filepath.Join(dir, "page"),
		mqttJS:   filepath.Join(dir, "node_modules", "mqtt", "dist", "mqtt.min.js"),
	}
	for _, f := range []string{tools.mqttJS, filepath.Join(dir, "node_modules", "playwright-core", "package.json")} {
		if _, err := os.Stat(f); err != nil {
			missing("e2e/browser/node_modules is missing: run `npm ci --prefix e2e/browser` in the repository root")
		}
	}
	return tools
}

// browserPageServer serves the test page, MQTT.js and the identity provider's token on a loopback origin of its own.
func browserPageServer(t *testing.T, pageDir, mqttJS, idpToken string) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", serveFile(filepath.Join(pageDir, "index.html"), "text/html; charset=utf-8"))
	mux.Handle("GET /app.js", serveFile(filepath.Join(pageDir, "app.js"), "text/javascript"))
	mux.Handle("GET /mqtt.min.js", serveFile(mqttJS, "text/javascript"))
	mux.HandleFunc("GET /idp-token", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		io.WriteString(w, idpToken)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func serveFile(path, contentType string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", contentType)
		http.ServeFile(w, r, path)
	})
}

// browserSPKIHash is what Chromium's --ignore-certificate-errors-spki-list takes: base64 of the SHA-256 of the
// certificate's SubjectPublicKeyInfo.
func browserSPKIHash(t *testing.T, certFile string) string {
	t.Helper()
	raw, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		t.Fatalf("%s: no PEM block", certFile)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// browserArtifactsDir keeps screenshots in $IDMQ_E2E_ARTIFACTS when set (for CI to upload), else in a temp dir.
func browserArtifactsDir(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("IDMQ_E2E_ARTIFACTS"); d != "" {
		d = filepath.Join(d, t.Name())
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

func browserHTTPClient(ca *testCA) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: ca.ClientTLS()}}
}

// browserWaitReady polls the HTTPS API's /readyz; the harness's start returns at the first "listening" line.
func browserWaitReady(t *testing.T, api string, ca *testCA) {
	t.Helper()
	client := browserHTTPClient(ca)
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := client.Get(api + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/readyz not 200 within 20s (last error: %v)", api, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// browserMetric returns the /metrics sample lines of one metric name.
func browserMetric(t *testing.T, api string, ca *testCA, name string) string {
	t.Helper()
	resp, err := browserHTTPClient(ca).Get(api + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var lines []string
	for _, l := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(l, name+"{") || strings.HasPrefix(l, name+" ") {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}

// browserDriver is a running driver.mjs with its Chromium; commands go in on stdin, replies come on stdout.
type browserDriver struct {
	stdin   io.WriteCloser
	replies chan browserReply
	stderr  *testkit.LogBuffer
}

type browserReply struct {
	OK      bool     `json:"ok"`
	Error   string   `json:"error"`
	Ready   bool     `json:"ready"`
	Version string   `json:"version"`
	State   string   `json:"state"`
	Console []string `json:"console"`
	DOM     struct {
		Origin   string   `json:"origin"`
		Status   string   `json:"status"`
		User     string   `json:"user"`
		Expires  string   `json:"expires"`
		Error    string   `json:"error"`
		Messages []string `json:"messages"`
	} `json:"dom"`
}

func startBrowser(t *testing.T, tools browserTools, spki string) *browserDriver {
	t.Helper()
	cmd := exec.Command("node", tools.driver)
	cmd.Dir = filepath.Dir(tools.driver)
	cmd.Env = append(os.Environ(),
		"BROWSER_EXECUTABLE="+tools.chromium,
		"BROWSER_USER_DATA_DIR="+t.TempDir(),
		"BROWSER_TRUSTED_SPKI="+spki,
	)
	// Its own process group, so a driver that does not exit on stdin EOF is killed together with Chromium.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	b := &browserDriver{replies: make(chan browserReply, 16), stderr: &testkit.LogBuffer{}}
	cmd.Stderr = b.stderr
	var err error
	if b.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start browser driver: %v", err)
	}
	go func() {
		defer close(b.replies)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
		for sc.Scan() {
			var r browserReply
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				r = browserReply{Error: fmt.Sprintf("driver wrote a non-JSON line %q", sc.Text())}
			}
			b.replies <- r
		}
	}()
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		b.stdin.Close()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		if t.Failed() {
			t.Logf("browser driver stderr:\n%s", b.stderr.String())
		}
	})

	r := b.next(t, 40*time.Second)
	if !r.Ready {
		t.Fatalf("browser did not start: %s\n%s", r.Error, b.stderr.String())
	}
	t.Logf("Chromium %s ready in %s", r.Version, time.Since(started).Round(time.Millisecond))
	return b
}

func (b *browserDriver) next(t *testing.T, within time.Duration) browserReply {
	t.Helper()
	select {
	case r, ok := <-b.replies:
		if !ok {
			t.Fatalf("browser driver exited:\n%s", b.stderr.String())
		}
		for _, l := range r.Console {
			t.Logf("browser: %s", l)
		}
		return r
	case <-time.After(within):
		t.Fatalf("browser driver silent for %s:\n%s", within, b.stderr.String())
		return browserReply{}
	}
}

// call sends one command and fails the test if the driver could not carry it out.
func (b *browserDriver) call(t *testing.T, cmd map[string]any) browserReply {
	t.Helper()
	line, err := json.Marshal(cmd)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.stdin.Write(append(line, '\n')); err != nil {
		t.Fatalf("browser driver stdin: %v", err)
	}
	r := b.next(t, browserStepTimeout+10*time.Second)
	if !r.OK {
		t.Fatalf("browser %s: %s (page state %q, status %q, error %q)", cmd["cmd"], r.Error, r.State, r.DOM.Status, r.DOM.Error)
	}
	return r
}

// waitState waits until the page's data-state is one of states and returns the page as it then is.
func (b *browserDriver) waitState(t *testing.T, states ...string) browserReply {
	t.Helper()
	return b.call(t, map[string]any{"cmd": "wait", "states": states, "timeout_ms": browserStepTimeout.Milliseconds()})
}

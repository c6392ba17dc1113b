package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/idmq/idmq/internal/testkit"
)

// The JavaScript SDK (clients/js, @idmq/client) against the real binary: in Node over TCP and WS
// (e2e/sdk/node-client.mjs) and in Chromium over WSS (e2e/sdk/page). Exchanged credentials live the minimum
// auth.exchange.ttl (1m) and the SDK refreshes 50 s ahead, so a refresh comes every ~10 s.

const (
	sdkExchangeTTL   = "1m" // the smallest auth.exchange.ttl the config accepts
	sdkRefreshBefore = "50" // seconds: refresh 10 s into each 60 s credential
	sdkAdminKey      = "sdk-admin-key-0123456789abcdef"
	sdkUser          = "e2e-service@example.com" // the OIDC provider's email claim for its default client
	sdkShortClient   = "sdk-short-lived"
)

// sdkRequireTooling finds node and the SDK's npm packages; without them it skips, or fails when CI=true.
func sdkRequireTooling(t *testing.T) (jsDir string) {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		missingTool(t, "node is not on PATH: install Node.js >= 20, then run `npm ci --prefix clients/js`")
	}
	jsDir = filepath.Join(repoRoot(), "clients", "js")
	if _, err := os.Stat(filepath.Join(jsDir, "node_modules", "mqtt", "package.json")); err != nil {
		missingTool(t, "clients/js/node_modules is missing: run `npm ci --prefix clients/js` in the repository root")
	}
	return jsDir
}

// sdkTokenServer hands out the identity provider's token, as an IdP SDK's getToken() does; a test swaps it.
type sdkTokenServer struct {
	*httptest.Server
	token atomic.Value // string
}

func newSDKTokenServer(t *testing.T, token string) *sdkTokenServer {
	s := &sdkTokenServer{}
	s.token.Store(token)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		io.WriteString(w, s.token.Load().(string))
	}))
	t.Cleanup(s.Close)
	return s
}

// sdkEvent is one line of node-client.mjs.
type sdkEvent struct {
	Event    string `json:"event"`
	InPlace  bool   `json:"inPlace"`
	Code     string `json:"code"`
	Action   string `json:"action"`
	Message  string `json:"message"`
	Topic    string `json:"topic"`
	Payload  string `json:"payload"`
	Username string `json:"username"`
	ClientID string `json:"clientId"`
}

// sdkNode is a running node-client.mjs.
type sdkNode struct {
	stdin  io.WriteCloser
	events chan sdkEvent
	exited chan struct{}
	cmd    *exec.Cmd
	stderr *testkit.LogBuffer

	mu       sync.Mutex
	received map[string]bool // payloads of messages delivered to the SDK client
}

func startSDKNode(t *testing.T, brokerURL, exchangeURL, tokenURL string, env ...string) *sdkNode {
	t.Helper()
	cmd := exec.Command("node", filepath.Join(repoRoot(), "e2e", "sdk", "node-client.mjs"))
	cmd.Env = append(os.Environ(), "SDK_BROKER_URL="+brokerURL, "SDK_EXCHANGE_URL="+exchangeURL,
		"SDK_TOKEN_URL="+tokenURL, "SDK_REFRESH_BEFORE="+sdkRefreshBefore)
	cmd.Env = append(cmd.Env, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	n := &sdkNode{events: make(chan sdkEvent, 1024), exited: make(chan struct{}), cmd: cmd, stderr: &testkit.LogBuffer{},
		received: map[string]bool{}}
	cmd.Stderr = n.stderr
	var err error
	if n.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start node SDK client: %v", err)
	}
	go func() {
		defer close(n.events)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var e sdkEvent
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				e = sdkEvent{Event: "garbage", Message: sc.Text()}
			}
			if e.Event == "message" {
				// Messages are counted, not queued: thousands flow while the test waits for other events.
				n.mu.Lock()
				n.received[e.Payload] = true
				n.mu.Unlock()
				continue
			}
			n.events <- e
		}
	}()
	go func() { _ = cmd.Wait(); close(n.exited) }()
	t.Cleanup(func() {
		n.stdin.Close()
		select {
		case <-n.exited:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-n.exited
		}
		if t.Failed() {
			t.Logf("node SDK client stderr:\n%s", n.stderr.String())
		}
	})
	return n
}

// next returns the next event other than the ones in skip; it fails the test after within.
func (n *sdkNode) next(t *testing.T, within time.Duration, skip ...string) sdkEvent {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case e, ok := <-n.events:
			if !ok {
				<-n.exited
				t.Fatalf("node SDK client exited (%s):\n%s", n.cmd.ProcessState, n.stderr.String())
			}
			if !slices.Contains(skip, e.Event) {
				return e
			}
		case <-deadline:
			t.Fatalf("node SDK client: no event within %s", within)
			return sdkEvent{}
		}
	}
}

func (n *sdkNode) expect(t *testing.T, want string, within time.Duration, skip ...string) sdkEvent {
	t.Helper()
	e := n.next(t, within, skip...)
	if e.Event != want {
		t.Fatalf("node SDK client: event %q (code %q, %s), want %q", e.Event, e.Code, e.Message, want)
	}
	return e
}

func (n *sdkNode) send(t *testing.T, line string) {
	t.Helper()
	if _, err := io.WriteString(n.stdin, line+"\n"); err != nil {
		t.Fatalf("node SDK client stdin: %v", err)
	}
}

func (n *sdkNode) got(payload string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.received[payload]
}

// sdkBroker starts idmq with the exchange at its shortest TTL, an OIDC provider and the admin API.
func sdkBroker(t *testing.T) (*idmqProc, *oidcProvider) {
	t.Helper()
	op := startOIDCProvider(t, oidcOptions{Clients: []oidcClient{
		{ID: oidcDefaultClientID, Secret: oidcDefaultClientSecret, Claims: oidcDefaultClaims()},
		{ID: sdkShortClient, Secret: "sdk-short-secret", TokenTTL: time.Second, Claims: oidcDefaultClaims()},
	}})
	p := newIdmq(t, fmt.Sprintf(`
listeners:
  - {type: tcp, address: "127.0.0.1:{{tcp}}"}
  - {type: ws, address: "127.0.0.1:{{ws}}"}
http:
  address: "127.0.0.1:{{http}}"
  admin_keys: ["%s"]
auth:
  exchange: {ttl: %s}
  providers:
    - {name: local, type: local}
    - {name: corp, type: oidc, issuer: %s, audiences: ["mqtt://idmq"], username_claim: email}
acl:
  rules:
    - {topic: "users/%%u/#", access: pubsub}
`, sdkAdminKey, sdkExchangeTTL, op.Issuer()))
	p.start()
	return p, op
}

// TestSDKNode: the SDK in Node keeps one connection across three refreshes over TCP and over WS with QoS 1
// messages flowing throughout, reports an expired IdP token to onTokenError and a revoked user to
// onAuthError, and signs out leaving nothing running.
func TestSDKNode(t *testing.T) {
	sdkRequireTooling(t)
	p, op := sdkBroker(t)
	idpToken := op.ClientCredentialsToken(t, "mqtt://idmq")
	tokens := newSDKTokenServer(t, idpToken)
	exchangeURL := "http://" + p.addr("http") + "/v2/tokens/exchange"
	pub, code := connectV3(t, v3Options(p.brokerURL("tcp"), "sdk-test-publisher", "jwt", idpToken, nil))
	if code != 0 {
		t.Fatalf("publisher CONNACK %d", code)
	}
	urls := map[string]string{
		"tcp": "mqtt://" + p.addr("tcp"),
		"ws":  "ws://" + p.addr("ws") + "/mqtt",
	}

	for _, tc := range []struct {
		name, transport string
		protocol        int
	}{
		{"three in-place refreshes over tcp", "tcp", 5},
		{"three in-place refreshes over ws", "ws", 5},
		// MQTT 3.1.1 has no AUTH: each refresh reconnects on the persistent session.
		{"MQTT 3.1.1 refreshes by reconnecting and loses nothing", "tcp", 4},
	} {
		transport, inPlace := tc.transport, tc.protocol == 5
		t.Run(tc.name, func(t *testing.T) {
			connectsBefore := scrapeInt(t, p, `idmq_connects_total{result="success"}`)
			n := startSDKNode(t, urls[transport], exchangeURL, tokens.URL, fmt.Sprintf("SDK_PROTOCOL_VERSION=%d", tc.protocol))
			sub := n.expect(t, "subscribed", 20*time.Second)
			if sub.Username != sdkUser {
				t.Fatalf("client.username %q, want %q", sub.Username, sdkUser)
			}

			// QoS 1 messages every 50 ms for as long as the refreshes take.
			stop := make(chan struct{})
			var sent []string
			var pubErr error
			pubDone := make(chan struct{})
			go func() {
				defer close(pubDone)
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					case <-time.After(50 * time.Millisecond):
					}
					payload := fmt.Sprintf("%s-v%d-%d", transport, tc.protocol, i)
					tok := pub.Publish("users/"+sdkUser+"/in", 1, false, payload)
					if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
						pubErr = fmt.Errorf("publish %s: %v", payload, tok.Error())
						return
					}
					sent = append(sent, payload)
				}
			}()

			started := time.Now()
			for i := 1; i <= 3; i++ {
				e := n.expect(t, "refreshed", 30*time.Second, "expiring", "close", "reconnected")
				if e.InPlace != inPlace {
					t.Fatalf("refresh %d in place: %v, want %v", i, e.InPlace, inPlace)
				}
				t.Logf("refresh %d (in place: %v) after %s", i, e.InPlace, time.Since(started).Round(time.Millisecond))
			}
			close(stop)
			<-pubDone
			if pubErr != nil {
				t.Fatal(pubErr)
			}
			deadline := time.Now().Add(15 * time.Second)
			var lost []string
			for {
				lost = lost[:0]
				for _, s := range sent {
					if !n.got(s) {
						lost = append(lost, s)
					}
				}
				if len(lost) == 0 || time.Now().After(deadline) {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if len(lost) > 0 {
				t.Errorf("%d of %d QoS 1 messages never reached the SDK client, e.g. %q", len(lost), len(sent), lost[0])
			}
			t.Logf("%d QoS 1 messages delivered across 3 refreshes in %s", len(sent), time.Since(started).Round(time.Millisecond))
			want := int64(1) // in place: the one connection stays
			if !inPlace {
				want = 4 // the first connection and one per refresh
			}
			// The last refresh's reconnect may still be counting when the SDK reports it: wait a little for it.
			var d int64
			testkit.Eventually(t, 5*time.Second, func() bool {
				d = scrapeInt(t, p, `idmq_connects_total{result="success"}`) - connectsBefore
				return d >= want
			}, "fewer than %d successful CONNECTs while the SDK client ran", want)
			if d != want {
				t.Errorf("%d successful CONNECTs while the SDK client ran, want %d", d, want)
			}
			n.send(t, "signout")
			n.expect(t, "signedOut", 10*time.Second, "expiring", "close", "reconnected")
		})
	}

	t.Run("expired IdP token goes to onTokenError and is retried", func(t *testing.T) {
		stale := op.ClientCredentialsTokenFor(t, sdkShortClient, "mqtt://idmq") // 1 s lifetime + 5 s leeway
		n := startSDKNode(t, urls["tcp"], exchangeURL, tokens.URL)
		n.expect(t, "subscribed", 20*time.Second)
		tokens.token.Store(stale)
		defer tokens.token.Store(idpToken)
		first := n.expect(t, "tokenError", 30*time.Second, "expiring")
		second := n.expect(t, "tokenError", 10*time.Second, "expiring")
		for _, e := range []sdkEvent{first, second} {
			if e.Code != "token_expired" || e.Action != "retry" {
				t.Errorf("onTokenError code %q action %q, want token_expired/retry", e.Code, e.Action)
			}
		}
		tokens.token.Store(idpToken)
		if e := n.expect(t, "refreshed", 15*time.Second, "expiring", "tokenError"); !e.InPlace {
			t.Error("the retried refresh reconnected instead of refreshing in place")
		}
		n.send(t, "signout")
		n.expect(t, "signedOut", 10*time.Second, "expiring", "close")
	})

	t.Run("a set-up error rejects connectWithToken with the exchange's code", func(t *testing.T) {
		n := startSDKNode(t, urls["tcp"], exchangeURL, tokens.URL, "SDK_PROVIDER=no-such-provider")
		e := n.expect(t, "connectFailed", 20*time.Second)
		if e.Code != "provider_not_found" || strings.Contains(e.Message, idpToken) {
			t.Errorf("connectWithToken rejected with code %q (%s), want provider_not_found without the token", e.Code, e.Message)
		}
	})

	t.Run("sign-out ends the session and leaves nothing running", func(t *testing.T) {
		n := startSDKNode(t, urls["ws"], exchangeURL, tokens.URL)
		sub := n.expect(t, "subscribed", 20*time.Second)
		if _, body := sdkAdminGet(t, p, "/v1/clients"); !strings.Contains(body, sub.ClientID) {
			t.Fatalf("/v1/clients does not list %q before sign-out: %s", sub.ClientID, body)
		}
		n.send(t, "signout-end")
		n.expect(t, "signedOut", 10*time.Second, "close")
		select {
		case <-n.exited:
			if c := n.cmd.ProcessState.ExitCode(); c != 0 {
				t.Errorf("node exited %d after sign-out", c)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("node still running 10 s after signOut(): the SDK left a timer or socket behind")
		}
		if _, body := sdkAdminGet(t, p, "/v1/clients"); strings.Contains(body, sub.ClientID) {
			t.Errorf("/v1/clients still lists %q after sign-out: %s", sub.ClientID, body)
		}
	})

	// Last: the revocation refuses every token of the user issued before it.
	t.Run("revoked user goes to onAuthError", func(t *testing.T) {
		n := startSDKNode(t, urls["tcp"], exchangeURL, tokens.URL)
		n.expect(t, "subscribed", 20*time.Second)
		req, _ := http.NewRequest(http.MethodPost, "http://"+p.addr("http")+"/v1/revocations",
			strings.NewReader(`{"username": "`+sdkUser+`"}`))
		req.Header.Set("Authorization", "Bearer "+sdkAdminKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("POST /v1/revocations: %d", resp.StatusCode)
		}
		e := n.expect(t, "authError", 15*time.Second, "close", "expiring")
		if e.Code != "token_revoked" || e.Action != "sign_in" {
			t.Errorf("onAuthError code %q action %q, want token_revoked/sign_in", e.Code, e.Action)
		}
		quiet := time.After(3 * time.Second)
		for done := false; !done; {
			select {
			case e := <-n.events:
				if e.Event != "close" {
					t.Errorf("event %q (code %q) after onAuthError: the SDK kept going", e.Event, e.Code)
				}
			case <-quiet:
				done = true
			}
		}
	})
}

func sdkAdminGet(t *testing.T, p *idmqProc, path string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+p.addr("http")+path, nil)
	req.Header.Set("Authorization", "Bearer "+sdkAdminKey)
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

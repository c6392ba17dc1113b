package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/idmq/idmq/internal/testkit"
)

const reloadAdminKey = "reload-admin-key-0123456789"

// reloadConfig is the broker of the reload tests; {{rules}} and {{providers}} are what the tests change.
const reloadConfig = `
data_dir: ./data
listeners: [{type: tcp, address: "127.0.0.1:{{tcp}}"}]
http: {address: "127.0.0.1:{{http}}", admin_keys: [` + reloadAdminKey + `]}
mqtt: {max_connect_rate: {per_second: 10000, burst: 10000}}
auth:
  providers:
    - {name: local, type: local, attributes: [role]}
{{providers}}
acl:
  rules:
    - {topic: "#", access: pubsub, when: {role: admin}}
    - {topic: "users/%u/#", access: pubsub}
    - {topic: "/devices/%u/state", access: publish}
{{rules}}
`

const fleetProvider = `    - {name: fleet, type: devices, project: my-project, registry_dir: devices}`

// startReloadBroker writes the config with rules and providers filled in and starts the broker.
func startReloadBroker(t *testing.T, providers, rules string) *idmqProc {
	t.Helper()
	p := newIdmq(t, strings.NewReplacer("{{providers}}", providers, "{{rules}}", rules).Replace(reloadConfig))
	if err := os.MkdirAll(filepath.Join(p.dir, "devices"), 0o700); err != nil {
		t.Fatal(err)
	}
	p.start()
	return p
}

// rewrite replaces the running broker's config file with the template filled in (ports kept).
func (p *idmqProc) rewrite(t *testing.T, providers, rules string) {
	t.Helper()
	cfg := strings.NewReplacer("{{providers}}", providers, "{{rules}}", rules,
		"{{tcp}}", fmt.Sprint(p.ports["tcp"]), "{{http}}", fmt.Sprint(p.ports["http"])).Replace(reloadConfig)
	if err := os.WriteFile(p.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestReloadBySIGHUPNarrowsAccess: a rule removed from the file and SIGHUP take a connected client's access
// away within a second: its next publish is refused and its subscription stops delivering; its own topics
// keep working and nobody is disconnected.
func TestReloadBySIGHUPNarrowsAccess(t *testing.T) {
	shared := `    - {topic: "shared/#", access: pubsub}`
	p := startReloadBroker(t, "", shared)
	alice, root := p.token("alice"), p.token("root", "--claim", "role=admin")
	a, _ := connectV5(t, dialV5(t, p, "tcp", nil), testkit.JWTConnect("alice-1", "alice", alice))
	ctx := context.Background()
	if _, err := a.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "shared/#", QoS: 1}, {Topic: "users/alice/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	r, _ := connectV3(t, v3Options(p.brokerURL("tcp"), "root-1", "root", root, nil))
	waitToken(t, r.Publish("shared/before", 1, false, "1"), "publish before")
	a.Expect(t, "shared/before", 5*time.Second)

	p.rewrite(t, "", "")
	reloadedAt := time.Now()
	if err := p.cmd.Process.Signal(syscallHUP()); err != nil {
		t.Fatal(err)
	}
	if !p.waitLog("config reloaded", 5*time.Second) {
		t.Fatal("no reload logged")
	}
	pr, err := a.Publish(ctx, &paho.Publish{Topic: "shared/after", QoS: 1, Payload: []byte("x")})
	if pr == nil || pr.ReasonCode != 0x87 {
		t.Fatalf("publish to a topic the reload took away: PUBACK %+v err %v, want 0x87", pr, err)
	}
	if took := time.Since(reloadedAt); took > time.Second+500*time.Millisecond {
		t.Logf("reload to refused publish took %s", took)
	}
	waitToken(t, r.Publish("shared/after", 1, false, "2"), "root publish after")
	waitToken(t, r.Publish("users/alice/inbox", 1, false, "3"), "root publish to alice")
	a.Expect(t, "users/alice/inbox", 5*time.Second) // what she still may receive arrives ...
	select {                                        // ... and shared/after, published before it, never did
	case pb := <-a.Received:
		t.Fatalf("received %s after the rule was removed", pb.Topic)
	case <-time.After(300 * time.Millisecond):
	}
	if v, _ := p.metric(`idmq_config_reloads_total{result="success"}`); v != "1" {
		t.Fatalf("idmq_config_reloads_total{result=\"success\"} = %q, want 1", v)
	}
}

// TestReloadRemovingAProviderDisconnectsItsClients: POST /v1/reload with the devices provider gone ends its
// clients (v5: DISCONNECT 0x87 "provider removed"; v3: closed) and keeps the local provider's; a local
// provider whose audience changes ends its clients with "credentials no longer valid".
func TestReloadRemovingAProviderDisconnectsItsClients(t *testing.T) {
	p := startReloadBroker(t, fleetProvider, "")
	keyPath := filepath.Join(p.dir, "dev-1.pem")
	registerDevice(t, p, "dev-1", newDeviceKey(t, keyPath, "ES256"))
	registerDevice(t, p, "dev-2", newDeviceKey(t, filepath.Join(p.dir, "dev-2.pem"), "ES256"))
	// The registry is polled every few seconds; a manual refresh picks the new devices up now.
	if code, body := p.admin(t, "POST", "/v1/providers/fleet/refresh", reloadAdminKey, ""); code != 200 {
		t.Fatalf("refresh: %d %v", code, body)
	}
	devToken := func(key string) string {
		out, errOut, code := p.idmqCmd("token", "device", "--key", key, "--project", "my-project")
		if code != 0 {
			t.Fatalf("idmq token device: %s", errOut)
		}
		return strings.TrimSpace(out)
	}
	dev5, _ := connectV5(t, dialV5(t, p, "tcp", nil), &paho.Connect{ClientID: "dev-1", CleanStart: true,
		Username: "unused", UsernameFlag: true, Password: []byte(devToken(keyPath)), PasswordFlag: true})
	if dev5 == nil {
		t.Fatal("device dev-1 refused")
	}
	lost := make(chan error, 1)
	o3 := v3Options(p.brokerURL("tcp"), "dev-2", "unused", devToken(filepath.Join(p.dir, "dev-2.pem")), nil)
	o3.SetConnectionLostHandler(func(_ mqtt3.Client, err error) { lost <- err })
	if _, code := connectV3(t, o3); code != 0 {
		t.Fatalf("device dev-2 refused: %d", code)
	}
	alice, _ := connectV5(t, dialV5(t, p, "tcp", nil), testkit.JWTConnect("alice-1", "alice", p.token("alice")))

	p.rewrite(t, "", "")
	code, body := p.admin(t, "POST", "/v1/reload", reloadAdminKey, "")
	if code != 200 || body["disconnected"] != float64(2) {
		t.Fatalf("POST /v1/reload: %d %v, want 200 with 2 disconnected", code, body)
	}
	select {
	case d := <-dev5.Disconnects:
		if d.ReasonCode != 0x87 || d.Properties == nil || d.Properties.ReasonString != "provider removed" {
			t.Fatalf("device got DISCONNECT 0x%02x %+v, want 0x87 \"provider removed\"", d.ReasonCode, d.Properties)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the v5 device was not disconnected")
	}
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Fatal("the v3 device's connection was not closed")
	}
	if pr, err := alice.Publish(context.Background(), &paho.Publish{Topic: "users/alice/x", QoS: 1, Payload: []byte("still here")}); err != nil || pr.ReasonCode != 0 {
		t.Fatalf("alice after the reload: %+v %v", pr, err)
	}

	p.rewrite(t, "", "")
	cfg, _ := os.ReadFile(p.config)
	changed := strings.Replace(string(cfg), "{name: local, type: local, attributes: [role]}", "{name: local, type: local, attributes: [role], audiences: [another-audience]}", 1)
	if err := os.WriteFile(p.config, []byte(changed), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, body := p.admin(t, "POST", "/v1/reload", reloadAdminKey, ""); code != 200 {
		t.Fatalf("POST /v1/reload: %d %v", code, body)
	}
	select {
	case d := <-alice.Disconnects:
		if d.ReasonCode != 0x87 || d.Properties == nil || d.Properties.ReasonString != "credentials no longer valid" {
			t.Fatalf("alice got DISCONNECT 0x%02x %+v, want 0x87 \"credentials no longer valid\"", d.ReasonCode, d.Properties)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("alice was not disconnected when her token's audience was no longer accepted")
	}
}

// TestReloadOfAnInvalidFileChangesNothing: the reply carries the error `idmq check` prints (field and line),
// `idmq reload` fails with it, and connected clients keep their access.
func TestReloadOfAnInvalidFileChangesNothing(t *testing.T) {
	p := startReloadBroker(t, "", `    - {topic: "shared/#", access: pubsub}`)
	a, _ := connectV3(t, v3Options(p.brokerURL("tcp"), "alice-1", "alice", p.token("alice"), nil))
	good, _ := os.ReadFile(p.config)
	if err := os.WriteFile(p.config, []byte(string(good)+"log: {level: loud}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, checkErr, _ := p.idmqCmd("check", "-c", p.config)
	code, body := p.admin(t, "POST", "/v1/reload", reloadAdminKey, "")
	msg, _ := body["message"].(string)
	if code != 422 || !strings.Contains(msg, "log.level") || !strings.Contains(checkErr, msg) {
		t.Fatalf("POST /v1/reload: %d %q; idmq check said %q", code, msg, checkErr)
	}
	out, errOut, exit := p.idmqCmd("reload", "-c", p.config)
	if exit == 0 || !strings.Contains(errOut, "log.level") {
		t.Fatalf("idmq reload of an invalid file: exit %d, %q %q", exit, out, errOut)
	}
	waitToken(t, a.Publish("shared/still", 1, false, "x"), "publish after a failed reload")
	if v, _ := p.metric(`idmq_config_reloads_total{result="failure"}`); v != "1" {
		t.Fatalf("idmq_config_reloads_total{result=\"failure\"} = %q, want 1", v)
	}
	if err := os.WriteFile(p.config, good, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, errOut, exit := p.idmqCmd("reload", "-c", p.config); exit != 0 || !strings.Contains(out, "reloaded") {
		t.Fatalf("idmq reload: exit %d, %q %q", exit, out, errOut)
	}
}

// TestReloadUnderLoad: 200 clients connect and publish QoS 1 while the config is reloaded again and again;
// every CONNECT with a valid token is accepted and every acknowledged message reaches the subscriber.
func TestReloadUnderLoad(t *testing.T) {
	rulesA := `    - {topic: "load/#", access: pubsub}`
	rulesB := rulesA + "\n" + `    - {topic: "other/#", access: subscribe}`
	p := startReloadBroker(t, "", rulesA)
	alice := p.token("alice")
	got := make(chan string, 10000)
	sub, _ := connectV3(t, v3Options(p.brokerURL("tcp"), "load-sub", "alice", alice, nil))
	waitToken(t, sub.Subscribe("load/#", 1, func(_ mqtt3.Client, m mqtt3.Message) { got <- string(m.Payload()) }), "subscribe")

	stop := make(chan struct{})
	var reloads atomic.Int64
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			rules := rulesA
			if i%2 == 0 {
				rules = rulesB
			}
			p.rewrite(t, "", rules)
			if code, body := p.admin(t, "POST", "/v1/reload", reloadAdminKey, ""); code == 200 {
				reloads.Add(1)
			} else {
				t.Errorf("reload: %d %v", code, body)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	const clients, perClient = 200, 5
	var wg sync.WaitGroup
	var refused atomic.Int64
	sem := make(chan struct{}, 20)
	for i := range clients {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c := mqtt3.NewClient(v3Options(p.brokerURL("tcp"), fmt.Sprintf("load-%d", i), "alice", alice, nil))
			if tok := c.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
				refused.Add(1)
				return
			}
			defer c.Disconnect(100)
			for j := range perClient {
				if tok := c.Publish(fmt.Sprintf("load/%d", i), 1, false, fmt.Sprintf("%d-%d", i, j)); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
					t.Errorf("client %d publish %d: %v", i, j, tok.Error())
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	if n := refused.Load(); n > 0 {
		t.Fatalf("%d valid CONNECTs were refused during reloads", n)
	}
	seen := map[string]bool{}
	deadline := time.After(20 * time.Second)
	for len(seen) < clients*perClient {
		select {
		case m := <-got:
			seen[m] = true
		case <-deadline:
			t.Fatalf("received %d of %d acknowledged QoS 1 messages", len(seen), clients*perClient)
		}
	}
	if reloads.Load() < 3 {
		t.Fatalf("only %d reloads ran during the load", reloads.Load())
	}
	t.Logf("%d clients x %d QoS 1 messages, %d reloads meanwhile: none refused, none lost", clients, perClient, reloads.Load())
}

// TestReloadAddsPublishLimits: a rule's qos and retain restrictions, added by a reload, refuse a connected
// client's QoS 1 publish (PUBACK 0x87) and its retained publish, and still let its QoS 0 publishes through.
func TestReloadAddsPublishLimits(t *testing.T) {
	p := startReloadBroker(t, "", `    - {topic: "telemetry/#", access: pubsub}`)
	a, _ := connectV5(t, dialV5(t, p, "tcp", nil), testkit.JWTConnect("alice-1", "alice", p.token("alice")))
	ctx := context.Background()
	if _, err := a.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "telemetry/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	p.rewrite(t, "", `    - {topic: "telemetry/#", access: pubsub, qos: [0], retain: false}`)
	if code, body := p.admin(t, "POST", "/v1/reload", reloadAdminKey, ""); code != 200 {
		t.Fatalf("reload: %d %v", code, body)
	}
	if pr, err := a.Publish(ctx, &paho.Publish{Topic: "telemetry/q1", QoS: 1, Payload: []byte("x")}); pr == nil || pr.ReasonCode != 0x87 {
		t.Fatalf("QoS 1 publish under qos: [0]: %+v %v, want PUBACK 0x87", pr, err)
	}
	if _, err := a.Publish(ctx, &paho.Publish{Topic: "telemetry/retained", QoS: 0, Retain: true, Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Publish(ctx, &paho.Publish{Topic: "telemetry/q0", QoS: 0, Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	select { // the first delivery: neither the refused QoS 1 nor the retained publish came before it
	case pb := <-a.Received:
		if pb.Topic != "telemetry/q0" {
			t.Fatalf("first delivery %s, want telemetry/q0", pb.Topic)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("QoS 0 publish not delivered")
	}
	select {
	case pb := <-a.Received:
		t.Fatalf("received %s, a publish the limits refuse", pb.Topic)
	case <-time.After(300 * time.Millisecond):
	}
}

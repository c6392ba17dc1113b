package e2e

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/idmq/idmq/client"
	"github.com/idmq/idmq/internal/testkit"
)

// goClientBroker: devices on TCP with the shortest practical leeway (1 s), so a token of 3 s is really over
// 4 s after it was minted, and a backend (local provider) that reads events and sends commands.
const goClientBroker = `
data_dir: ./data
listeners:
  - {type: tcp, address: "127.0.0.1:{{tcp}}"}
http: {address: "127.0.0.1:{{http}}"}
auth:
  leeway: 1s
  providers:
    - {name: local, type: local, attributes: [role]}
    - {name: fleet, type: devices, project: my-project, registry_dir: devices}
acl:
  rules:
    - {topic: "/devices/+/events/#", access: subscribe, when: {role: backend}}
    - {topic: "/devices/+/commands/#", access: publish, when: {role: backend}}
    - {topic: "/devices/%u/events/#", access: publish}
    - {topic: "/devices/%u/commands/#", access: subscribe}
`

const goClientTTL = 3 * time.Second

// goClientDevice is a device running the client package, and everything its callbacks saw.
type goClientDevice struct {
	mu       sync.Mutex
	tokens   []string // every token its source produced
	commands chan *paho.Publish
	connects chan *paho.Connack
	lost     chan error
	refresh  chan time.Time
	logs     *testkit.LogBuffer
}

func newGoClientDevice() *goClientDevice {
	return &goClientDevice{commands: make(chan *paho.Publish, 1000), connects: make(chan *paho.Connack, 10),
		lost: make(chan error, 10), refresh: make(chan time.Time, 100), logs: &testkit.LogBuffer{}}
}

func (d *goClientDevice) config(p *idmqProc, id string, source client.TokenSource) client.Config {
	return client.Config{
		Brokers:  []string{"tcp://" + p.addr("tcp")},
		ClientID: id,
		Token: func(ctx context.Context) (string, error) {
			tok, err := source(ctx)
			d.mu.Lock()
			d.tokens = append(d.tokens, tok)
			d.mu.Unlock()
			return tok, err
		},
		RefreshBefore:    time.Second,
		CleanStart:       true,
		BackoffMin:       100 * time.Millisecond,
		BackoffMax:       time.Second,
		OnConnect:        func(ack *paho.Connack) { d.connects <- ack },
		OnConnectionLost: func(err error) { d.lost <- err },
		OnTokenRefreshed: func(exp time.Time) { d.refresh <- exp },
		Router:           paho.NewStandardRouterWithDefault(func(p *paho.Publish) { d.commands <- p }),
		Logger:           slog.New(slog.NewTextHandler(d.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

func (d *goClientDevice) minted() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.tokens...)
}

// exchange: the device publishes an event the backend must receive, and the backend a command the device
// must receive.
func (d *goClientDevice) exchange(t *testing.T, c *client.Client, backend *testkit.V5Client, id string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	event := fmt.Sprintf("/devices/%s/events/%d", id, n)
	if err := c.Publish(ctx, &paho.Publish{Topic: event, QoS: 1, Payload: []byte("21.5")}); err != nil {
		t.Fatalf("device publish %d: %v", n, err)
	}
	backend.Expect(t, event, 5*time.Second)
	command := fmt.Sprintf("/devices/%s/commands/%d", id, n)
	if _, err := backend.Publish(ctx, &paho.Publish{Topic: command, QoS: 1, Payload: []byte("reboot")}); err != nil {
		t.Fatalf("backend publish %d: %v", n, err)
	}
	for {
		select {
		case m := <-d.commands:
			if m.Topic == command {
				return
			}
		case <-ctx.Done():
			t.Fatalf("device received no %s", command)
		}
	}
}

func goClientBackend(t *testing.T, p *idmqProc, id string) *testkit.V5Client {
	t.Helper()
	backend, ack := connectV5(t, dialV5(t, p, "tcp", nil), &paho.Connect{ClientID: id, CleanStart: true,
		Password: []byte(p.token("backend", "--claim", "role=backend")), PasswordFlag: true})
	if backend == nil {
		t.Fatalf("backend CONNACK 0x%02X", ack.ReasonCode)
	}
	if _, err := backend.Subscribe(context.Background(), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "/devices/+/events/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	return backend
}

// TestGoClientDeviceOutlivesItsTokens: a device on the client package, with ES256 tokens of 3 s minted from
// its own key, stays on ONE connection across more than three token lifetimes (refreshing in place over
// AUTH) with messages flowing both ways; when the broker restarts it reconnects with backoff, re-subscribes
// and carries on. Its log never contains a token.
func TestGoClientDeviceOutlivesItsTokens(t *testing.T) {
	p := newIdmq(t, goClientBroker)
	if err := os.Mkdir(filepath.Join(p.dir, "devices"), 0o755); err != nil {
		t.Fatal(err)
	}
	key := newDeviceKey(t, filepath.Join(p.dir, "thermo-private.pem"), "ES256")
	registerDevice(t, p, "thermo", key)
	p.start()
	backend := goClientBackend(t, p, "backend")

	d := newGoClientDevice()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Connect(ctx, d.config(p, "thermo", client.DeviceToken(key, "my-project", "ES256", goClientTTL)))
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	defer func() { _ = c.Disconnect(context.Background()) }()
	if err := c.Subscribe(ctx, "/devices/thermo/commands/#", 1); err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	accepted := func() string {
		v, ok := p.metric(`idmq_connects_total{result="success"}`)
		if !ok {
			t.Fatal(`no idmq_connects_total{result="success"} in /metrics`)
		}
		return v
	}
	connectsBefore := accepted()

	// Until the third token's exp + leeway has passed: the broker would have ended a connection still on it.
	n := 0
	for deadline := time.Now().Add(40 * time.Second); ; n++ {
		if tokens := d.minted(); len(tokens) >= 3 && time.Now().After(tokenExpiry(t, tokens[2]).Add(time.Second)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 40s only %d tokens minted", len(d.minted()))
		}
		d.exchange(t, c, backend, "thermo", n)
		time.Sleep(200 * time.Millisecond)
	}
	if after := accepted(); after != connectsBefore {
		t.Fatalf("accepted CONNECTs went from %s to %s while the device refreshed: it reconnected", connectsBefore, after)
	}
	if len(d.connects) != 1 || len(d.lost) != 0 {
		t.Fatalf("%d connections, %d lost (first: %v), want one connection never lost", len(d.connects), len(d.lost), firstOf(d.lost))
	}
	if len(d.refresh) < 3 {
		t.Fatalf("%d in-place refreshes, want at least 3", len(d.refresh))
	}
	t.Logf("%d exchanges and %d refreshes on one connection", n, len(d.refresh))

	// A broker restart: the device notices, reconnects with backoff, re-subscribes (its session ended with the
	// connection) and messages flow again.
	p.stop()
	select {
	case err := <-d.lost:
		if err == nil {
			t.Fatal("OnConnectionLost with a nil error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the device did not notice the broker stopping")
	}
	p.start()
	select {
	case <-d.connects: // the first connection's
	default:
	}
	select {
	case ack := <-d.connects:
		if ack.SessionPresent {
			t.Fatal("session present after a restart with SessionExpiry 0")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the device did not reconnect within 20s of the broker's restart")
	}
	backend = goClientBackend(t, p, "backend-2")
	for i := range 3 {
		d.exchange(t, c, backend, "thermo", 1000+i)
	}

	if err := c.Disconnect(context.Background()); err != nil {
		t.Fatalf("Disconnect: %v", err)
	}
	logs := d.logs.String()
	for _, tok := range d.minted() {
		if tok != "" && strings.Contains(logs, tok[strings.LastIndex(tok, ".")+1:]) {
			t.Fatalf("the client logged a token (its signature appears in the log):\n%s", logs)
		}
	}
	if !strings.Contains(logs, "token refreshed in place") {
		t.Fatalf("no refresh in the client's log:\n%s", logs)
	}
}

// TestGoClientWrongKey: a device whose key the registry does not hold is refused at once with an error that
// says so (ErrAuth, CONNACK 0x86), not retried until the caller's deadline like a broker that is down.
func TestGoClientWrongKey(t *testing.T) {
	p := newIdmq(t, goClientBroker)
	if err := os.Mkdir(filepath.Join(p.dir, "devices"), 0o755); err != nil {
		t.Fatal(err)
	}
	registerDevice(t, p, "thermo", newDeviceKey(t, filepath.Join(p.dir, "thermo-private.pem"), "ES256"))
	stranger := newDeviceKey(t, filepath.Join(p.dir, "stranger-private.pem"), "ES256")
	p.start()

	d := newGoClientDevice()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	c, err := client.Connect(ctx, d.config(p, "thermo", client.DeviceToken(stranger, "my-project", "", time.Minute)))
	if err == nil {
		_ = c.Disconnect(context.Background())
		t.Fatal("Connect with an unregistered key succeeded")
	}
	var refused *client.ReasonError
	if !errors.Is(err, client.ErrAuth) || !errors.As(err, &refused) || refused.Packet != "CONNACK" || refused.Code != 0x86 {
		t.Fatalf("Connect: %v (%#v), want ErrAuth from CONNACK 0x86", err, refused)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("refusal took %s: it was retried", took)
	}

	// Nothing listens: the same call is retried until its deadline and says the broker is unreachable.
	p.stop()
	short, cancelShort := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancelShort()
	_, err = client.Connect(short, d.config(p, "thermo", client.DeviceToken(stranger, "my-project", "", time.Minute)))
	if err == nil || errors.Is(err, client.ErrAuth) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Connect to a stopped broker: %v, want a deadline error that is not ErrAuth", err)
	}
}

func firstOf(ch chan error) error {
	select {
	case err := <-ch:
		return err
	default:
		return nil
	}
}

package broker

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/idmq/idmq/internal/testkit"
	"github.com/idmq/idmq/internal/testkit/wire"
	"github.com/idmq/idmq/refusal"
)

// walkBroker is a started broker for TestEveryRefusalOnTheWire, with its log captured.
type walkBroker struct {
	*Broker
	addr string
	logs *testkit.LogBuffer
}

func startWalkBroker(t *testing.T, extra string) *walkBroker {
	t.Helper()
	yaml := "data_dir: " + t.TempDir() + `
listeners: [{type: tcp, address: "127.0.0.1:0"}]
http: {address: "127.0.0.1:0"}
storage: {type: memory}
acl: {rules: [{topic: "users/%u/#", access: pubsub}]}
` + extra
	cfg, err := Parse([]byte(yaml), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	logs := &testkit.LogBuffer{}
	b := startBroker(t, cfg, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})))
	return &walkBroker{Broker: b, addr: b.Addresses()["tcp0"], logs: logs}
}

// outcome is what a refused client sees.
type outcome struct {
	packet string // "CONNACK", "DISCONNECT", or "none" (the connection was closed without one)
	code   byte
	reason string // MQTT 5 Reason String
}

func (o outcome) String() string {
	if o.packet == "none" {
		return "connection closed without a packet"
	}
	return fmt.Sprintf("%s 0x%02X %q", o.packet, o.code, o.reason)
}

// expectConnack makes the case's CONNECT with protocol v and checks it against row.
func (w *refusalWorld) expectConnack(t *testing.T, row refusal.Row, v byte, c refusalCase) {
	b := w.main
	if c.on != nil {
		b = c.on
	}
	if c.before != nil {
		c.before(t)
	}
	a := c.connect(v)
	mark := b.mark(t, row)
	var got, want outcome
	switch {
	case v == 5:
		got, _ = b.tryV5(t, a)
		want = outcome{packet: "CONNACK", code: row.V5, reason: row.Reason}
	case row.V3 == 0:
		got, want = b.tryV3(t, a), outcome{packet: "none"}
	default:
		got, want = b.tryV3(t, a), outcome{packet: "CONNACK", code: row.V3}
	}
	if got != want {
		t.Errorf("client sees %s, want %s", got, want)
	}
	b.checkRecorded(t, mark, row, a.clientID, true)
}

// expectDisconnect connects as the case's conn, then sends its AUTH.
func (w *refusalWorld) expectDisconnect(t *testing.T, row refusal.Row, v byte, c refusalCase) {
	b := w.main
	var got, want outcome
	if v < 5 {
		mark := b.mark(t, row)
		got, want = b.authV3(t, c.conn), outcome{packet: "none"}
		if got != want {
			t.Errorf("client sees %s, want %s", got, want)
		}
		b.checkRecorded(t, mark, row, c.conn.clientID, false)
		return
	}
	ca, cl := b.tryV5(t, c.conn)
	if cl == nil {
		t.Fatalf("connecting to re-authenticate: %s", ca)
	}
	mark := b.mark(t, row)
	reason := c.auth.reason
	if reason == 0 {
		reason = 0x19
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ar, err := cl.Authenticate(ctx, &paho.Auth{ReasonCode: reason,
		Properties: &paho.AuthProperties{AuthMethod: c.auth.method, AuthData: []byte(c.auth.token)}})
	if err != nil || ar.Success {
		t.Fatalf("AUTH: %+v, %v; want a DISCONNECT", ar, err)
	}
	got = outcome{packet: "DISCONNECT", code: ar.ReasonCode}
	if ar.Properties != nil {
		got.reason = ar.Properties.ReasonString
	}
	if want = (outcome{packet: "DISCONNECT", code: row.Disconnect, reason: row.Reason}); got != want {
		t.Errorf("client sees %s, want %s", got, want)
	}
	b.checkRecorded(t, mark, row, c.conn.clientID, false)
}

// tryV5 connects with paho.golang. An accepted client is returned, and disconnected when the test ends.
func (b *walkBroker) tryV5(t *testing.T, a attempt) (outcome, *testkit.V5Client) {
	t.Helper()
	cp := &paho.Connect{ClientID: a.clientID, CleanStart: true, Username: a.username, UsernameFlag: a.username != ""}
	if a.method != "" {
		// paho sends Request Problem Information 0 with any properties unless told; mochi then drops the
		// CONNACK Reason String, as [MQTT-3.1.2-29] allows.
		cp.Properties = &paho.ConnectProperties{AuthMethod: a.method, AuthData: []byte(a.password), RequestProblemInfo: true}
	} else if a.password != "" {
		cp.Password, cp.PasswordFlag = []byte(a.password), true
	}
	if a.will != "" {
		cp.WillMessage = &paho.WillMessage{Topic: a.will, QoS: 1, Payload: []byte("gone")}
	}
	c, ca, _ := testkit.ConnectV5(t, testkit.DialTCP(t, b.addr), cp)
	if ca == nil {
		return outcome{packet: "none"}, nil
	}
	got := outcome{packet: "CONNACK", code: ca.ReasonCode}
	if ca.Properties != nil {
		got.reason = ca.Properties.ReasonString
	}
	if ca.ReasonCode != 0 {
		return got, nil
	}
	return got, c
}

// holdV5 connects a client that must be accepted and stays connected until the test ends.
func (b *walkBroker) holdV5(t *testing.T, a attempt) {
	t.Helper()
	if got, c := b.tryV5(t, a); c == nil {
		t.Fatalf("connecting %q: %s", a.clientID, got)
	}
}

// tryV3 connects with paho.mqtt.golang, protocol 3.1.1.
func (b *walkBroker) tryV3(t *testing.T, a attempt) outcome {
	t.Helper()
	username := a.username
	if username == "" && a.password != "" {
		username = "jwt" // a 3.1.1 password needs a user name [MQTT-3.1.2-22]; "jwt" is a placeholder
	}
	o := testkit.V3Options("tcp://"+b.addr, a.clientID, username, a.password)
	if a.will != "" {
		o.SetWill(a.will, "gone", 1, false)
	}
	_, rc, _ := testkit.ConnectV3(t, o)
	if rc > 0x05 { // paho's own codes: no CONNACK arrived
		return outcome{packet: "none"}
	}
	return outcome{packet: "CONNACK", code: rc}
}

// authV3 connects with MQTT 3.1.1 and sends an AUTH packet, which 3.1.1 does not have (paho.mqtt.golang
// cannot send one, and mochi's codec would not write one for 3.1.1, so it is written by hand).
func (b *walkBroker) authV3(t *testing.T, a attempt) outcome {
	t.Helper()
	conn := testkit.DialTCP(t, b.addr)
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	connect := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30, ClientIdentifier: a.clientID,
			UsernameFlag: true, Username: []byte("alice"), PasswordFlag: true, Password: []byte(a.password)}}
	if err := wire.WritePacket(conn, &connect); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(conn)
	if ack, err := wire.ReadPacket(r, 4); err != nil || ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != 0 {
		t.Fatalf("3.1.1 CONNACK %+v code %d, %v", ack.FixedHeader, ack.ReasonCode, err)
	}
	if _, err := conn.Write([]byte{0xF0, 0x02, 0x19, 0x00}); err != nil { // AUTH 0x19, no properties
		t.Fatal(err)
	}
	if n, err := r.Read(make([]byte, 64)); err != io.EOF {
		t.Fatalf("after AUTH: read %d bytes, %v; want the connection closed", n, err)
	}
	return outcome{packet: "none"}
}

// recordMark is the counter and log position before a refusal.
type recordMark struct {
	counter float64
	lines   int
}

func (b *walkBroker) mark(t *testing.T, row refusal.Row) recordMark {
	return recordMark{counter: b.counter(t, row.Metric), lines: len(b.logs.Lines())}
}

// checkRecorded: one log line "… refused …" for clientID at row.Level since mark, and, for a CONNECT,
// row.Metric one higher.
func (b *walkBroker) checkRecorded(t *testing.T, mark recordMark, row refusal.Row, clientID string, connect bool) {
	t.Helper()
	if connect && row.Metric != "" {
		if got := b.counter(t, row.Metric) - mark.counter; got != 1 {
			t.Errorf("%s went up by %v, want 1", row.Metric, got)
		}
	}
	var found []string
	for _, l := range b.logs.Lines()[mark.lines:] {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["client"] == clientID && strings.Contains(fmt.Sprint(m["msg"]), "refused") {
			found = append(found, fmt.Sprint(m["level"]))
		}
	}
	if len(found) != 1 || found[0] != row.Level.String() {
		t.Errorf("refusal log lines for %q at levels %v, want one at %s", clientID, found, row.Level)
	}
}

// counter sums the counters that selector (name{label="value",...}) matches; 0 for "".
func (b *walkBroker) counter(t *testing.T, selector string) float64 {
	t.Helper()
	if selector == "" {
		return 0
	}
	name, labels, _ := strings.Cut(strings.TrimSuffix(selector, "}"), "{")
	want := map[string]string{}
	for _, kv := range strings.Split(labels, ",") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			want[k] = strings.Trim(v, `"`)
		}
	}
	families, err := b.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			matched := 0
			for _, lp := range m.GetLabel() {
				if want[lp.GetName()] == lp.GetValue() {
					matched++
				}
			}
			if matched == len(want) {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// runBench runs the command and returns its JSON results and its stderr.
func runBench(t *testing.T, args ...string) ([]result, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), args, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d\nstderr:\n%s", code, stderr.String())
	}
	var out []result
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		var r result
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("stdout line is not a result: %v\n%s", err, sc.Text())
		}
		out = append(out, r)
	}
	return out, stderr.String()
}

func checkLatency(t *testing.T, what string, l latency, count uint64) {
	t.Helper()
	if l.Count != count {
		t.Errorf("%s: %d samples, want %d", what, l.Count, count)
	}
	if count > 0 && !(0 < l.P50Ms && l.P50Ms <= l.P90Ms && l.P90Ms <= l.P99Ms && l.P99Ms <= l.MaxMs) {
		t.Errorf("%s: percentiles not ordered: %+v", what, l)
	}
}

func checkConnect(t *testing.T, r result, n int) {
	t.Helper()
	c := r.Connect
	if c == nil {
		t.Fatalf("%s: no connect stats", r.Scenario)
	}
	if c.Attempted != n || c.Connected != n || c.Failed != 0 || len(c.Failures) != 0 {
		t.Errorf("%s: attempted %d connected %d failed %d %v, want %d/%d/0", r.Scenario, c.Attempted, c.Connected, c.Failed, c.Failures, n, n)
	}
	if c.PerSecond <= 0 {
		t.Errorf("%s: %v connects/s", r.Scenario, c.PerSecond)
	}
	checkLatency(t, r.Scenario+" connack", c.ConnackMs, uint64(n))
}

func checkMessages(t *testing.T, r result, publishers, subscribers int, expected int64) {
	t.Helper()
	m := r.Messages
	if m == nil {
		t.Fatalf("%s: no message stats", r.Scenario)
	}
	if m.Publishers != publishers || m.Subscribers != subscribers || m.Expected != expected {
		t.Errorf("%s qos %d: %d publishers %d subscribers %d expected, want %d/%d/%d", r.Scenario, *r.QoS, m.Publishers, m.Subscribers, m.Expected, publishers, subscribers, expected)
	}
	if m.Received+m.Lost != m.Expected || m.Received > m.Expected {
		t.Errorf("%s: received %d + lost %d != expected %d", r.Scenario, m.Received, m.Lost, m.Expected)
	}
	if *r.QoS == 1 && (m.Lost != 0 || m.Acked != m.Sent) {
		t.Errorf("%s qos 1: lost %d, acked %d of %d sent; want nothing lost and all acked", r.Scenario, m.Lost, m.Acked, m.Sent)
	}
	if m.Duplicates != 0 || m.Foreign != 0 || len(m.PublishFailures) != 0 {
		t.Errorf("%s: duplicates %d foreign %d publish failures %v", r.Scenario, m.Duplicates, m.Foreign, m.PublishFailures)
	}
	if m.Received > 0 && (m.OutPerS <= 0 || m.InPerS <= 0) {
		t.Errorf("%s: rates in %v out %v", r.Scenario, m.InPerS, m.OutPerS)
	}
	checkLatency(t, r.Scenario+" end-to-end", m.LatencyMs, uint64(m.Received))
}

func TestEveryScenarioAgainstMochi(t *testing.T) {
	b := startBroker(t, nil)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector())
	metrics := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer metrics.Close()

	const clients, pubs, msgs, subs, fanMsgs, idle = 50, 10, 200, 20, 50, 50
	tests := []struct {
		name string
		args []string
	}{
		{name: "tcp v5", args: []string{"--transport", "tcp", "--addr", b.tcp, "--protocol", "5"}},
		{name: "ws v3.1.1", args: []string{"--transport", "ws", "--addr", b.ws, "--protocol", "3.1.1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append(tt.args, "--label", "mochi", "--scenario", "connect,reconnect,fanin,fanout,idle",
				"--clients", fmt.Sprint(clients), "--publishers", fmt.Sprint(pubs), "--messages", fmt.Sprint(msgs),
				"--subscribers", fmt.Sprint(subs), "--fanout-messages", fmt.Sprint(fanMsgs), "--idle-clients", fmt.Sprint(idle),
				"--idle-topic", "bench/all", "--idle-settle", "50ms", "--drain", "1s", "--timeout", "15s", "--total-timeout", "60s",
				"--broker-pid", fmt.Sprint(os.Getpid()), "--metrics-url", metrics.URL)
			results, stderr := runBench(t, args...)
			var names []string
			for _, r := range results {
				names = append(names, r.Scenario)
				if r.Label != "mochi" || r.Transport != tt.args[1] || r.Protocol != map[string]string{"5": "5", "3.1.1": "3.1.1"}[tt.args[5]] {
					t.Errorf("%s: label %q transport %q protocol %q", r.Scenario, r.Label, r.Transport, r.Protocol)
				}
				if r.TimedOut || r.Error != "" || r.Dropped != 0 {
					t.Errorf("%s: timed out %v, error %q, dropped %d %v", r.Scenario, r.TimedOut, r.Error, r.Dropped, r.DropReasons)
				}
			}
			if got := strings.Join(names, ","); got != "connect,reconnect,fanin,fanin,fanout,fanout,idle" {
				t.Fatalf("scenarios %s", got)
			}
			checkConnect(t, results[0], clients)
			checkConnect(t, results[1], clients)
			checkConnect(t, results[2], 2*pubs)
			checkMessages(t, results[2], pubs, pubs, pubs*msgs)
			checkMessages(t, results[3], pubs, pubs, pubs*msgs)
			checkConnect(t, results[4], subs+1)
			checkMessages(t, results[4], 1, subs, subs*fanMsgs)
			checkMessages(t, results[5], 1, subs, subs*fanMsgs)

			idleRes := results[6]
			checkConnect(t, idleRes, idle)
			// One shared topic: one publish reaches every idle client.
			checkMessages(t, idleRes, 1, idle, idle)
			br := idleRes.Broker
			if br == nil || br.RSS == nil || br.Goroutines == nil || br.HeapInuse == nil || len(br.Errors) != 0 {
				t.Fatalf("idle broker stats %+v", br)
			}
			// In this process each connection costs mochi's read and write loops plus our reader.
			if br.Goroutines.PerConn < 2 || br.RSS.After <= 0 || br.HeapInuse.After <= 0 {
				t.Errorf("idle: goroutines/conn %v rss after %v heap after %v", br.Goroutines.PerConn, br.RSS.After, br.HeapInuse.After)
			}
			if !strings.Contains(stderr, "scenario") || !strings.Contains(stderr, "goroutines/conn") {
				t.Errorf("no summary table on stderr:\n%s", stderr)
			}
		})
	}
}

func TestConnectFailuresAreCountedByReason(t *testing.T) {
	b := startBroker(t, &credHook{user: "bench-0", secret: "good", method: "jwt"})
	dir := t.TempDir()
	tokens := dir + "/tokens"
	// Credential 0 is valid, the others are refused: every second client fails.
	if err := os.WriteFile(tokens, []byte("good\nbad\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	results, _ := runBench(t, "--addr", b.tcp, "--tokens", tokens, "--scenario", "connect", "--clients", "10", "--timeout", "10s")
	c := results[0].Connect
	if results[0].Credentials != "tokens" || c.Attempted != 10 || c.Connected != 5 || c.Failed != 5 {
		t.Fatalf("credentials %s, attempted %d connected %d failed %d", results[0].Credentials, c.Attempted, c.Connected, c.Failed)
	}
	if c.Failures["connack 0x86 bad user name or password"] != 5 {
		t.Errorf("failures %v", c.Failures)
	}
	results, _ = runBench(t, "--addr", b.tcp, "--tokens", tokens, "--auth-method", "jwt", "--scenario", "connect", "--clients", "4", "--timeout", "10s")
	if c := results[0].Connect; c.Connected != 2 || c.Failed != 2 {
		t.Errorf("with authentication data: connected %d failed %d %v", c.Connected, c.Failed, c.Failures)
	}
}

func TestRunRefusesBadFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"remote target", []string{"--addr", "192.0.2.1:1883"}, "--addr"},
		{"too many clients", []string{"--scenario", "idle", "--idle-clients", "200", "--max-clients", "100"}, "--max-clients"},
		{"unknown scenario", []string{"--scenario", "storm"}, "--scenario"},
		{"missing tokens file", []string{"--tokens", "/nonexistent/tokens"}, "/nonexistent/tokens"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(context.Background(), tt.args, &stdout, &stderr); code != 2 {
				t.Errorf("exit %d, want 2", code)
			}
			if !strings.Contains(stderr.String(), tt.want) || stdout.Len() != 0 {
				t.Errorf("stderr %q should name %s; stdout %q", stderr.String(), tt.want, stdout.String())
			}
		})
	}
}

// --reconnect-rounds reconnects every client that many times after the warm-up, and the result counts the
// measured rounds only.
func TestReconnectRoundsAreMeasuredTogether(t *testing.T) {
	rec := &passwordRecorder{}
	b := startBroker(t, rec)
	const clients, rounds = 20, 3
	results, _ := runBench(t, "--addr", b.tcp, "--scenario", "reconnect", "--clients", fmt.Sprint(clients),
		"--reconnect-rounds", fmt.Sprint(rounds), "--timeout", "15s")
	r := results[0]
	checkConnect(t, r, clients*rounds)
	if r.Warmup == nil || r.Warmup.Connected != clients {
		t.Fatalf("warm-up %+v, want %d connected", r.Warmup, clients)
	}
	rec.mu.Lock()
	got := len(rec.passwords)
	rec.mu.Unlock()
	if got != clients*(rounds+1) {
		t.Fatalf("broker handled %d CONNECTs, want %d (warm-up and %d rounds of %d)", got, clients*(rounds+1), rounds, clients)
	}
	if r.Dropped != 0 {
		t.Fatalf("%d connections dropped", r.Dropped)
	}
}

// passwordRecorder allows everything and records the CONNECT passwords in the order the broker saw them.
type passwordRecorder struct {
	auth.AllowHook
	mu        sync.Mutex
	passwords []string
}

func (h *passwordRecorder) ID() string { return "password-recorder" }

func (h *passwordRecorder) Provides(b byte) bool {
	return b == mqtt.OnConnect || h.AllowHook.Provides(b)
}

func (h *passwordRecorder) OnConnect(_ *mqtt.Client, pk packets.Packet) error {
	h.mu.Lock()
	h.passwords = append(h.passwords, string(pk.Connect.Password))
	h.mu.Unlock()
	return nil
}

// --connect-warmup connects once with the second half of the credentials, so that the measured storm's
// tokens were never seen (a verified-token cache would otherwise make it a reconnect storm), and refuses to
// run when there is no second half.
func TestConnectWarmupUsesOtherCredentials(t *testing.T) {
	rec := &passwordRecorder{}
	b := startBroker(t, rec)
	const clients = 5
	var lines []string
	for i := 0; i < 2*clients; i++ {
		lines = append(lines, fmt.Sprintf("bench-%d\ttok-%d", i, i))
	}
	tokens := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tokens, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	results, _ := runBench(t, "--addr", b.tcp, "--scenario", "connect", "--connect-warmup", "--clients", fmt.Sprint(clients), "--tokens", tokens, "--timeout", "15s")
	r := results[0]
	checkConnect(t, r, clients)
	if r.Warmup == nil || r.Warmup.Connected != clients {
		t.Fatalf("warm-up %+v, want %d connected", r.Warmup, clients)
	}
	rec.mu.Lock()
	seen := append([]string(nil), rec.passwords...)
	rec.mu.Unlock()
	if len(seen) != 2*clients {
		t.Fatalf("broker saw %d CONNECTs, want %d", len(seen), 2*clients)
	}
	for i, p := range seen {
		var n int
		fmt.Sscanf(p, "tok-%d", &n)
		if warm := i < clients; warm != (n >= clients) {
			t.Fatalf("CONNECT %d carried %s: the warm-up must use tok-%d..tok-%d and the storm tok-0..tok-%d", i, p, clients, 2*clients-1, clients-1)
		}
	}

	short := filepath.Join(t.TempDir(), "short")
	if err := os.WriteFile(short, []byte(strings.Join(lines[:clients], "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	run(context.Background(), []string{"--addr", b.tcp, "--scenario", "connect", "--connect-warmup", "--clients", fmt.Sprint(clients), "--tokens", short, "--timeout", "15s"}, &stdout, &stderr)
	if !strings.Contains(stdout.String(), "--connect-warmup needs 10 credentials") {
		t.Fatalf("no clear error with too few credentials:\n%s\n%s", stdout.String(), stderr.String())
	}
}

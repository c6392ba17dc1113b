package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func qosPtrInt(q int) *int { return &q }

// writeRun lays out a run directory the way compare.sh does.
func writeRun(t *testing.T, labels string, results map[string][]result, verify string) string {
	t.Helper()
	dir := t.TempDir()
	meta := "date: 2026-01-01 00:00 UTC\nmachine: 2 CPUs\nlabels: " + labels + "\n"
	if err := os.WriteFile(filepath.Join(dir, "meta.txt"), []byte(meta), 0o600); err != nil {
		t.Fatal(err)
	}
	for label, rs := range results {
		var buf bytes.Buffer
		for _, r := range rs {
			b, _ := json.Marshal(r)
			buf.Write(append(b, '\n'))
		}
		if err := os.WriteFile(filepath.Join(dir, label+".jsonl"), buf.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if verify != "" {
		if err := os.WriteFile(filepath.Join(dir, "verify-bench.txt"), []byte(verify), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func faninResult(label string, qos int, inPerS float64, lost int64) result {
	return result{Scenario: scenarioFanin, Label: label, QoS: qosPtrInt(qos), BrokerCPUS: 1,
		Messages: &messageStats{Sent: 1000, Expected: 1000, Received: 1000 - lost, Lost: lost, InPerS: inPerS, OutPerS: inPerS}}
}

func connectResult(label string, perS float64, cpuS float64) result {
	return result{Scenario: scenarioConnect, Label: label, BrokerCPUS: cpuS,
		Connect: &connectStats{Attempted: 1000, Connected: 1000, PerSecond: perS}}
}

const verifyOutput = `goos: linux
BenchmarkVerify/RS256/idmq         	     200	     45953 ns/op	    5472 B/op	      82 allocs/op
BenchmarkVerify/RS256/jwt.Parse    	     200	     36000 ns/op	    4368 B/op	      74 allocs/op
PASS
`

func TestReportComputesRatiosAndTargets(t *testing.T) {
	dir := writeRun(t, "idmq-jwt idmq-allow idmq-allow-verify mosquitto", map[string][]result{
		labelJWT:    {connectResult(labelJWT, 4000, 0.2), faninResult(labelJWT, 0, 90000, 0), faninResult(labelJWT, 1, 30000, 0)},
		labelVerify: {connectResult(labelVerify, 4500, 0.15)},
		labelAllow:  {connectResult(labelAllow, 5000, 0.1), faninResult(labelAllow, 0, 100000, 0), faninResult(labelAllow, 1, 40000, 0)},
		labelMosq:   {connectResult(labelMosq, 6000, 0.1), faninResult(labelMosq, 0, 60000, 0), faninResult(labelMosq, 1, 20000, 0)},
	}, verifyOutput)
	out := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	var stderr bytes.Buffer
	if code := runReport([]string{"--dir", dir, "--kind", "compare", "-o", out}, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	md, _ := os.ReadFile(out)
	for _, want := range []string{
		"| fan-in QoS 0 msgs in/s | 1.50× | 0.90× |",                                                                 // 90000/60000, 90000/100000
		"JWT+ACL fan-in QoS 1 throughput (deliveries/s) ≥ 0.9× allow-all | idmq-jwt / idmq-allow = 0.75× | **no** |", // 30000/40000
		"| RS256 | 36.0 µs | 46.0 µs | 200 µs | 100 µs | 100 µs | 2.78× | 50.0 µs |",                                 // (200-100)/36; 150-100
		"200 µs vs 150 µs: 1.33× | **no** |",
		"Failures: none",
	} {
		if !strings.Contains(string(md), want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}

func TestReportFailsOnLossRefusalAndMissingBroker(t *testing.T) {
	refused := connectResult(labelJWT, 4000, 0.2)
	refused.Connect.Failed, refused.Connect.Connected = 3, 997
	refused.Connect.Failures = map[string]int{"connack 0x87 not authorized": 3}
	dir := writeRun(t, "idmq-jwt mosquitto", map[string][]result{
		labelJWT: {refused, faninResult(labelJWT, 0, 90000, 12), faninResult(labelJWT, 1, 30000, 5)},
	}, "")
	out := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	var stderr bytes.Buffer
	if code := runReport([]string{"--dir", dir, "--kind", "compare", "-o", out}, &stderr); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	for _, want := range []string{"3 of 1000 connections failed", "5 QoS 1 messages lost", "mosquitto: no results file"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}
	if strings.Contains(stderr.String(), "12 QoS") {
		t.Errorf("QoS 0 loss reported as a failure:\n%s", stderr.String())
	}
}

// Each script owns one section of BENCHMARKS.md: rewriting one keeps the other and any text around them.
func TestReplaceSectionKeepsTheOtherSection(t *testing.T) {
	path := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	steps := []struct{ kind, body string }{
		{"compare", "compare v1\n"},
		{"scale", "scale v1\n"},
		{"compare", "compare v2\n"},
	}
	for _, s := range steps {
		if err := replaceSection(path, s.kind, s.body); err != nil {
			t.Fatal(err)
		}
	}
	md, _ := os.ReadFile(path)
	text := string(md)
	if !strings.Contains(text, "compare v2") || strings.Contains(text, "compare v1") || !strings.Contains(text, "scale v1") {
		t.Fatalf("sections not replaced in place:\n%s", text)
	}
	if strings.Index(text, "compare v2") > strings.Index(text, "scale v1") {
		t.Errorf("the compare section moved after the scale section:\n%s", text)
	}
}

// The reconnect floor sets the hooks benchmark on top of allow-all's reconnect cost from the same run.
func TestReportReconnectFloor(t *testing.T) {
	reconnect := func(label string, cpuS float64) result {
		r := connectResult(label, 9000, cpuS)
		r.Scenario = scenarioReconnect
		return r
	}
	dir := writeRun(t, "idmq-jwt idmq-allow", map[string][]result{
		labelJWT:   {reconnect(labelJWT, 0.185)},
		labelAllow: {reconnect(labelAllow, 0.148)},
	}, "")
	hooks := "goos: linux\nBenchmarkCachedReconnectHooks \t  200000\t      2960 ns/op\t    1144 B/op\t      18 allocs/op\nPASS\n"
	if err := os.WriteFile(filepath.Join(dir, "hooks-bench.txt"), []byte(hooks), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	var stderr bytes.Buffer
	runReport([]string{"--dir", dir, "--kind", "compare", "-o", out}, &stderr)
	md, _ := os.ReadFile(out)
	// 185 and 148 µs per reconnect; (148 + 2.96) / 148 = 1.02.
	if want := "| 2.96 µs | 148 µs | 1.02× | 1.25× |"; !strings.Contains(string(md), want) {
		t.Errorf("report lacks %q:\n%s", want, md)
	}
}

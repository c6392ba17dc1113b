package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReportCluster: the cluster section sets each cluster beside the plain node per QoS, with medians over the
// rounds, their range, and a ratio below its target in bold.
func TestReportCluster(t *testing.T) {
	dir := writeRun(t, "idmq idmq-cluster-1 idmq-cluster-3", map[string][]result{
		labelSolo: {faninResult(labelSolo, 0, 100000, 0), faninResult(labelSolo, 0, 120000, 0), faninResult(labelSolo, 0, 80000, 0),
			faninResult(labelSolo, 1, 40000, 0)},
		labelCluster1: {faninResult(labelCluster1, 0, 75000, 0), faninResult(labelCluster1, 1, 20000, 0)},
		labelCluster3: {faninResult(labelCluster3, 0, 60000, 0), faninResult(labelCluster3, 1, 20000, 0)},
	}, "")
	out := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	var stderr bytes.Buffer
	if code := runReport([]string{"--dir", dir, "--kind", "cluster", "-o", out}, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	md, _ := os.ReadFile(out)
	for _, want := range []string{
		"| idmq | 0 | 100000 | 80000 – 120000 | 1000 µs | – | – | – | 0 |", // median of three rounds; 1 s CPU / 1,000 received
		"| idmq-cluster-1 | 0 | 75000 | 75000 – 75000 | 1000 µs | 0.75× | ≥ 0.7× | 1.00× | 0 |",
		"| idmq-cluster-3 | 0 | 60000 | 60000 – 60000 | 1000 µs | 0.60× | ≥ 0.5× | 1.00× | 0 |",
		"| idmq-cluster-1 | 1 | 20000 | 20000 – 20000 | 1000 µs | **0.50×** | ≥ 0.7× |", // below target
		"| idmq-cluster-3 | 1 | 20000 | 20000 – 20000 | 1000 µs | 0.50× | ≥ 0.5× |",
	} {
		if !strings.Contains(string(md), want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}

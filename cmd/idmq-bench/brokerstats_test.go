package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestReadRSS(t *testing.T) {
	rss, err := readRSS("/proc/self/status")
	if err != nil || rss < 1<<20 {
		t.Fatalf("own rss %d, %v", rss, err)
	}
	bad := filepath.Join(t.TempDir(), "status")
	if err := os.WriteFile(bad, []byte("Name:\tx\nVmRSS:\t12 MB\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readRSS(bad); err == nil || !strings.Contains(err.Error(), "VmRSS") {
		t.Errorf("odd unit accepted: %v", err)
	}
}

func TestParseGauges(t *testing.T) {
	text := `# HELP go_goroutines Number of goroutines.
# TYPE go_goroutines gauge
go_goroutines 20010
go_memstats_heap_inuse_bytes{instance="x"} 1
go_memstats_heap_inuse_bytes 7.51075328e+08
go_goroutines_total 3
`
	got, err := parseGauges(strings.NewReader(text), "go_goroutines", "go_memstats_heap_inuse_bytes")
	if err != nil {
		t.Fatal(err)
	}
	if got[0] != 20010 || got[1] != 751075328 {
		t.Errorf("got %v", got)
	}
	if _, err := parseGauges(strings.NewReader("go_goroutines 1\n"), "go_goroutines", "go_memstats_heap_inuse_bytes"); err == nil {
		t.Error("missing gauge not reported")
	}
}

func TestSampleBroker(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("go_goroutines 12\ngo_memstats_heap_inuse_bytes 4096\ngo_memstats_stack_inuse_bytes 8192\n"))
	}))
	defer srv.Close()
	s, errs := sampleBroker(context.Background(), os.Getpid(), srv.URL)
	if len(errs) != 0 || !s.hasRSS || !s.hasMetrics || s.goroutines != 12 || s.heapInuse != 4096 || s.stackInuse != 8192 {
		t.Fatalf("sample %+v errors %v", s, errs)
	}
	after := s
	after.rss += 1000 * 2048
	after.goroutines += 2000
	after.stackInuse += 1000 * 8192
	b := brokerDelta(os.Getpid(), 1000, s, after, nil)
	if b.RSS.PerConn != 2048 || b.Goroutines.PerConn != 2 || b.HeapInuse.PerConn != 0 || b.StackInuse.PerConn != 8192 {
		t.Errorf("per connection: rss %v goroutines %v heap %v stacks %v", b.RSS.PerConn, b.Goroutines.PerConn, b.HeapInuse.PerConn, b.StackInuse.PerConn)
	}
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	if _, errs := sampleBroker(context.Background(), 0, down.URL); len(errs) != 1 {
		t.Errorf("unreachable metrics: errors %v", errs)
	}
}

func TestParseCPUTime(t *testing.T) {
	tests := []struct {
		name string
		stat string
		want time.Duration
		ok   bool
	}{
		{name: "plain", stat: "42 (idmq) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 100 0", want: 3 * time.Second, ok: true},
		{name: "command with spaces and parens", stat: "42 (a) b (c)) S 1 42 42 0 -1 0 0 0 0 0 7 3 0 0 20 0 1 0 1 0", want: 100 * time.Millisecond, ok: true},
		{name: "truncated", stat: "42 (idmq) S 1 2", ok: false},
		{name: "no command", stat: "garbage", ok: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseCPUTime(tt.stat)
			if (err == nil) != tt.ok || got != tt.want {
				t.Errorf("parseCPUTime = %v, %v; want %v (ok %v)", got, err, tt.want, tt.ok)
			}
		})
	}
	if d, err := readCPUTime(os.Getpid()); err != nil || d < 0 {
		t.Errorf("own cpu time %v, %v", d, err)
	}
}

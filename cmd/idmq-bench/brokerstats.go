package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// maxMetricsBody bounds a /metrics scrape.
const maxMetricsBody = 8 << 20

// brokerSample is what we can see of the broker process at one moment; absent sources are left zero/false.
type brokerSample struct {
	rss        int64
	hasRSS     bool
	heapInuse  float64
	stackInuse float64
	goroutines float64
	hasMetrics bool
}

// sampleBroker reads RSS from /proc (with --broker-pid) and Go gauges from /metrics (with --metrics-url).
func sampleBroker(ctx context.Context, pid int, metricsURL string) (brokerSample, []string) {
	var s brokerSample
	var errs []string
	if pid > 0 {
		rss, err := readRSS(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			errs = append(errs, err.Error())
		} else {
			s.rss, s.hasRSS = rss, true
		}
	}
	if metricsURL != "" {
		g, err := scrapeGauges(ctx, metricsURL, "go_goroutines", "go_memstats_heap_inuse_bytes", "go_memstats_stack_inuse_bytes")
		if err != nil {
			errs = append(errs, err.Error())
		} else {
			s.goroutines, s.heapInuse, s.stackInuse, s.hasMetrics = g[0], g[1], g[2], true
		}
	}
	return s, errs
}

// readRSS returns VmRSS in bytes from a /proc/<pid>/status file.
func readRSS(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("broker rss: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, fmt.Errorf("broker rss: %s: unexpected VmRSS line %q", path, sc.Text())
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("broker rss: %s: %w", path, err)
		}
		return kb * 1024, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("broker rss: %s: %w", path, err)
	}
	return 0, fmt.Errorf("broker rss: %s has no VmRSS line", path)
}

// scrapeGauges fetches a Prometheus text exposition and returns the unlabelled samples named, in order.
func scrapeGauges(ctx context.Context, url string, names ...string) ([]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics: %s answered HTTP %d", url, resp.StatusCode)
	}
	return parseGauges(io.LimitReader(resp.Body, maxMetricsBody), names...)
}

func parseGauges(r io.Reader, names ...string) ([]float64, error) {
	want := make(map[string]int, len(names))
	for i, n := range names {
		want[n] = i
	}
	out := make([]float64, len(names))
	found := make([]bool, len(names))
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		// idmq names every metric idmq_…, the Go runtime's included (idmq_go_goroutines).
		i, wanted := want[strings.TrimPrefix(name, "idmq_")]
		if !ok || !wanted {
			continue
		}
		v, err := strconv.ParseFloat(strings.Fields(value)[0], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics: %s: %w", name, err)
		}
		out[i], found[i] = v, true
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	for i, ok := range found {
		if !ok {
			return nil, fmt.Errorf("metrics: no %s sample", names[i])
		}
	}
	return out, nil
}

// brokerDelta turns two samples into the result's per-connection figures.
func brokerDelta(pid, conns int, before, after brokerSample, errs []string) *brokerStats {
	b := &brokerStats{PID: pid, Connections: conns, Errors: errs}
	if before.hasRSS && after.hasRSS {
		b.RSS = newPerConn(float64(before.rss), float64(after.rss), conns)
	}
	if before.hasMetrics && after.hasMetrics {
		b.HeapInuse = newPerConn(before.heapInuse, after.heapInuse, conns)
		b.StackInuse = newPerConn(before.stackInuse, after.stackInuse, conns)
		b.Goroutines = newPerConn(before.goroutines, after.goroutines, conns)
	}
	return b
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat; 100 on every Linux architecture Go
// supports.
const clockTicks = 100

// brokerCPU is the CPU time of the broker: --broker-pid plus, for a cluster, --peer-pids.
func (c *config) brokerCPU() (time.Duration, error) {
	total, err := readCPUTime(c.BrokerPID)
	if err != nil {
		return 0, err
	}
	for _, pid := range c.PeerPIDs {
		d, err := readCPUTime(pid)
		if err != nil {
			return 0, err
		}
		total += d
	}
	return total, nil
}

// readCPUTime returns the user+system CPU time of process pid (all its threads) from /proc/PID/stat.
func readCPUTime(pid int) (time.Duration, error) {
	if pid <= 0 {
		return 0, fmt.Errorf("broker cpu: no --broker-pid")
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("broker cpu: %w", err)
	}
	return parseCPUTime(string(data))
}

// parseCPUTime reads fields 14 (utime) and 15 (stime) of a stat line. The command name (field 2) may hold
// spaces and parentheses, so fields are counted after its last ')'.
func parseCPUTime(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("broker cpu: malformed stat line")
	}
	f := strings.Fields(stat[i+1:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0, fmt.Errorf("broker cpu: stat line has %d fields after the command", len(f))
	}
	var ticks int64
	for _, s := range f[11:13] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("broker cpu: %w", err)
		}
		ticks += v
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// figure is one number read from a result; better says which direction is an improvement.
type figure struct {
	name     string
	scenario string
	qos      int // -1: the scenario has no QoS
	unit     string
	higher   bool // a higher value is better
	get      func(*result) (float64, bool)
}

func connectRate(r *result) (float64, bool) {
	if r.Connect == nil || r.Connect.Connected == 0 {
		return 0, false
	}
	return r.Connect.PerSecond, true
}

func connackP99(r *result) (float64, bool) {
	if r.Connect == nil || r.Connect.Connected == 0 {
		return 0, false
	}
	return r.Connect.ConnackMs.P99Ms, true
}

// cpuPerConnect is broker CPU per connection of the scenario, in µs (it includes the disconnects).
func cpuPerConnect(r *result) (float64, bool) {
	if r.Connect == nil || r.Connect.Connected == 0 || r.BrokerCPUS == 0 {
		return 0, false
	}
	return r.BrokerCPUS / float64(r.Connect.Connected) * 1e6, true
}

func msgs(f func(*messageStats) float64) func(*result) (float64, bool) {
	return func(r *result) (float64, bool) {
		if r.Messages == nil || r.Messages.Received == 0 {
			return 0, false
		}
		return f(r.Messages), true
	}
}

func cpuPerDelivery(r *result) (float64, bool) {
	if r.Messages == nil || r.Messages.Received == 0 || r.BrokerCPUS == 0 {
		return 0, false
	}
	return r.BrokerCPUS / float64(r.Messages.Received) * 1e6, true
}

func brokerPerConn(pick func(*brokerStats) *perConn) func(*result) (float64, bool) {
	return func(r *result) (float64, bool) {
		if r.Broker == nil || pick(r.Broker) == nil || r.Broker.Connections == 0 {
			return 0, false
		}
		return pick(r.Broker).PerConn, true
	}
}

func idleConnectS(r *result) (float64, bool) {
	if r.Connect == nil || r.Connect.Connected == 0 {
		return 0, false
	}
	return r.Connect.DurationS, true
}

func lostCount(r *result) (float64, bool) {
	if r.Messages == nil {
		return 0, false
	}
	return float64(r.Messages.Lost), true
}

var (
	figConnectRate   = figure{"connects/s", scenarioConnect, -1, "/s", true, connectRate}
	figConnackP99    = figure{"CONNACK p99", scenarioConnect, -1, "ms", false, connackP99}
	figConnectCPU    = figure{"broker CPU per connect+disconnect", scenarioConnect, -1, "µs", false, cpuPerConnect}
	figReconnectRate = figure{"reconnects/s (cached token)", scenarioReconnect, -1, "/s", true, connectRate}
	figReconnectCPU  = figure{"broker CPU per reconnect+disconnect", scenarioReconnect, -1, "µs", false, cpuPerConnect}
	figIdleRSS       = figure{"RSS per idle connection", scenarioIdle, 1, "B", false, brokerPerConn(func(b *brokerStats) *perConn { return b.RSS })}
	figIdleHeap      = figure{"Go heap in use per idle connection", scenarioIdle, 1, "B", false, brokerPerConn(func(b *brokerStats) *perConn { return b.HeapInuse })}
	figIdleStack     = figure{"goroutine stacks per idle connection", scenarioIdle, 1, "B", false, brokerPerConn(func(b *brokerStats) *perConn { return b.StackInuse })}
	figIdleG         = figure{"goroutines per idle connection", scenarioIdle, 1, "", false, brokerPerConn(func(b *brokerStats) *perConn { return b.Goroutines })}
	figIdleConnectS  = figure{"time to connect all idle clients", scenarioIdle, 1, "s", false, idleConnectS}
	figIdleP50       = figure{"idle fan-out delivery p50", scenarioIdle, 1, "ms", false, msgs(func(m *messageStats) float64 { return m.LatencyMs.P50Ms })}
	figIdleP99       = figure{"idle fan-out delivery p99", scenarioIdle, 1, "ms", false, msgs(func(m *messageStats) float64 { return m.LatencyMs.P99Ms })}
	figIdleLost      = figure{"idle fan-out lost", scenarioIdle, 1, "", false, lostCount}
)

func messageFigures(scenario string, qos int) []figure {
	what := map[string]string{scenarioFanin: "fan-in", scenarioFanout: "fan-out"}[scenario]
	p := fmt.Sprintf("%s QoS %d ", what, qos)
	return []figure{
		{p + "msgs in/s", scenario, qos, "/s", true, msgs(func(m *messageStats) float64 { return m.InPerS })},
		{p + "deliveries/s", scenario, qos, "/s", true, msgs(func(m *messageStats) float64 { return m.OutPerS })},
		{p + "latency p50", scenario, qos, "ms", false, msgs(func(m *messageStats) float64 { return m.LatencyMs.P50Ms })},
		{p + "latency p99", scenario, qos, "ms", false, msgs(func(m *messageStats) float64 { return m.LatencyMs.P99Ms })},
		{p + "broker CPU per delivery", scenario, qos, "µs", false, cpuPerDelivery},
		{p + "lost", scenario, qos, "", false, lostCount},
	}
}

// value is the median over the rounds of label's results for f; ok is false when no round measured it.
func (r *benchRun) value(label string, f figure) (float64, bool) {
	var vs []float64
	for _, res := range r.results[label] {
		if res.Scenario != f.scenario {
			continue
		}
		if f.qos >= 0 && f.scenario != scenarioIdle && (res.QoS == nil || *res.QoS != f.qos) {
			continue
		}
		if v, ok := f.get(res); ok {
			vs = append(vs, v)
		}
	}
	if len(vs) == 0 {
		return 0, false
	}
	sort.Float64s(vs)
	if len(vs)%2 == 1 {
		return vs[len(vs)/2], true
	}
	return (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2, true
}

func (r *benchRun) ratio(a, b string, f figure) (float64, bool) {
	va, oka := r.value(a, f)
	vb, okb := r.value(b, f)
	if !oka || !okb || vb == 0 {
		return 0, false
	}
	return va / vb, true
}

func formatValue(v float64, unit string) string {
	var s string
	switch {
	case v == 0:
		s = "0"
	case v >= 100 || v <= -100:
		s = strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10 || v <= -10:
		s = strconv.FormatFloat(v, 'f', 1, 64)
	default:
		s = strconv.FormatFloat(v, 'f', 2, 64)
	}
	if unit == "" || unit == "/s" {
		return s
	}
	return s + " " + unit
}

func formatRatio(v float64, ok bool) string {
	if !ok {
		return "–"
	}
	return strconv.FormatFloat(v, 'f', 2, 64) + "×"
}

// figureTable writes one row per figure and one column per label that measured any of them.
func (r *benchRun) figureTable(w *strings.Builder, figs []figure) {
	var cols []string
	for _, l := range r.labels {
		for _, f := range figs {
			if _, ok := r.value(l, f); ok {
				cols = append(cols, l)
				break
			}
		}
	}
	if len(cols) == 0 {
		w.WriteString("(not measured)\n\n")
		return
	}
	fmt.Fprintf(w, "| figure | %s |\n|---|%s\n", strings.Join(cols, " | "), strings.Repeat("---:|", len(cols)))
	for _, f := range figs {
		row := []string{f.name}
		any := false
		for _, l := range cols {
			if v, ok := r.value(l, f); ok {
				row = append(row, formatValue(v, f.unit))
				any = true
			} else {
				row = append(row, "–")
			}
		}
		if any {
			fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
		}
	}
	w.WriteString("\n")
}

func (r *benchRun) writeMeta(w *strings.Builder) {
	for _, kv := range r.meta {
		if kv[0] == "labels" {
			continue
		}
		fmt.Fprintf(w, "- %s: %s\n", kv[0], kv[1])
	}
	w.WriteString("\n")
}

func (r *benchRun) writeFailures(w *strings.Builder) {
	if len(r.failures) == 0 {
		w.WriteString("Failures: none (every scenario ran, every connection was accepted and kept, no QoS 1 message was lost).\n\n")
		return
	}
	w.WriteString("**Failures in this run:**\n\n")
	for _, f := range r.failures {
		fmt.Fprintf(w, "- %s\n", f)
	}
	w.WriteString("\n")
}

// writeProfiles includes the top frames of every profile-*.txt the run left (go tool pprof -top).
func (r *benchRun) writeProfiles(w *strings.Builder, heading string) {
	files, _ := filepath.Glob(filepath.Join(r.dir, "profile-*.txt"))
	if len(files) == 0 {
		return
	}
	sort.Strings(files)
	w.WriteString(heading)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > 32 {
			lines = lines[:32]
		}
		name := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(f), "profile-"), ".txt")
		fmt.Fprintf(w, "`%s`:\n\n```\n%s\n```\n\n", name, strings.Join(lines, "\n"))
	}
}

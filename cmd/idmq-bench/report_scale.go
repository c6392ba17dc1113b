package main

import (
	"fmt"
	"strconv"
	"strings"
)

// renderScale writes the idle-connection scale runs, one row per label and transport: tables only, as
// renderCompare.
func renderScale(r *benchRun) string {
	var w strings.Builder
	w.WriteString("## Idle connections at scale (`bench/scale.sh`)\n\n")
	r.writeMeta(&w)
	w.WriteString("| broker | transport | connections | RSS/conn | Go heap/conn | stacks/conn | goroutines/conn | broker RSS | connect all | fan-out p50 | fan-out p99 | lost |\n" +
		"|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, l := range r.labels {
		for _, res := range r.results[l] {
			if res.Scenario != scenarioIdle {
				continue
			}
			cell := func(f figure) string {
				if v, ok := f.get(res); ok {
					return formatValue(v, f.unit)
				}
				return "–"
			}
			conns, rss := "–", "–"
			if res.Broker != nil {
				conns = strconv.Itoa(res.Broker.Connections)
				if res.Broker.RSS != nil {
					rss = formatValue(res.Broker.RSS.After/(1<<20), "MiB")
				}
			}
			fmt.Fprintf(&w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", l, res.Transport, conns,
				cell(figIdleRSS), cell(figIdleHeap), cell(figIdleStack), cell(figIdleG), rss, cell(figIdleConnectS), cell(figIdleP50), cell(figIdleP99), cell(figIdleLost))
		}
	}
	w.WriteString("\n")
	r.writeProfiles(&w, "### Heap profiles while the connections were held (top frames, `go tool pprof -top -sample_index=inuse_space`)\n\n")
	r.writeFailures(&w)
	return w.String()
}

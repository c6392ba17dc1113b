package main

import (
	"fmt"
	"sort"
	"strings"
)

// Labels cluster.sh uses.
const (
	labelSolo     = "idmq"
	labelCluster1 = "idmq-cluster-1"
	labelCluster3 = "idmq-cluster-3"
)

// clusterTargets are the floors for deliveries/s relative to the node without a cluster.
var clusterTargets = map[string]float64{labelCluster1: 0.7, labelCluster3: 0.5}

// renderCluster writes the cluster section: per QoS, each label's fan-in deliveries/s and broker CPU per delivery
// (medians over the rounds, with the range), and the ratio to the node without a cluster beside its target.
func renderCluster(r *benchRun) string {
	var w strings.Builder
	w.WriteString("## Cluster (`bench/cluster.sh`)\n\n")
	r.writeMeta(&w)
	w.WriteString("| broker | QoS | deliveries/s (median) | range over rounds | broker CPU per delivery | vs idmq deliveries/s | target | vs idmq CPU per delivery | lost |\n" +
		"|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, q := range []int{0, 1} {
		figs := messageFigures(scenarioFanin, q)
		rate, cpu, lost := figs[1], figs[4], figs[5]
		for _, l := range r.labels {
			v, ok := r.value(l, rate)
			if !ok {
				continue
			}
			lo, hi := r.spread(l, rate)
			row := []string{l, fmt.Sprint(q), formatValue(v, rate.unit), formatValue(lo, rate.unit) + " – " + formatValue(hi, rate.unit), "–", "–", "–", "–", "–"}
			if c, ok := r.value(l, cpu); ok {
				row[4] = formatValue(c, cpu.unit)
			}
			if l != labelSolo {
				row[5] = formatRatio(r.ratio(l, labelSolo, rate))
				row[7] = formatRatio(r.ratio(l, labelSolo, cpu))
			}
			if t, ok := clusterTargets[l]; ok {
				row[6] = fmt.Sprintf("≥ %.1f×", t)
				if x, ok := r.ratio(l, labelSolo, rate); ok && x < t {
					row[5] = "**" + row[5] + "**" // below target
				}
			}
			if n, ok := r.value(l, lost); ok {
				row[8] = formatValue(n, "")
			}
			fmt.Fprintf(&w, "| %s |\n", strings.Join(row, " | "))
		}
	}
	w.WriteString("\n")
	r.writeProfiles(&w, "### CPU profiles of a 3-node cluster under QoS 1 fan-in (top frames, `go tool pprof -top`)\n\n")
	r.writeFailures(&w)
	return w.String()
}

// spread is the lowest and highest of label's per-round values of f.
func (r *benchRun) spread(label string, f figure) (lo, hi float64) {
	var vs []float64
	for _, res := range r.results[label] {
		if res.Scenario != f.scenario || (f.qos >= 0 && (res.QoS == nil || *res.QoS != f.qos)) {
			continue
		}
		if v, ok := f.get(res); ok {
			vs = append(vs, v)
		}
	}
	if len(vs) == 0 {
		return 0, 0
	}
	sort.Float64s(vs)
	return vs[0], vs[len(vs)-1]
}

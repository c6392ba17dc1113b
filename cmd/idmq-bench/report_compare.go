package main

import (
	"fmt"
	"strings"
)

// Labels compare.sh uses; the report reads whichever of them the run produced.
const (
	labelJWT      = "idmq-jwt"
	labelAllow    = "idmq-allow"
	labelVerify   = "idmq-allow-verify"
	labelMosq     = "mosquitto"
	labelJWTMochi = "idmq-jwt-mochi-defaults"
)

// renderCompare writes the comparison section: tables only. What each broker and figure is, and how the
// figures compare with the targets of past work, is the hand-written part of BENCHMARKS.md.
func renderCompare(r *benchRun) string {
	var w strings.Builder
	w.WriteString("## Peer comparison (`bench/compare.sh`)\n\n")
	r.writeMeta(&w)

	w.WriteString("### Connect and reconnect storms\n\n")
	r.figureTable(&w, []figure{figConnectRate, figConnackP99, figConnectCPU, figReconnectRate, figReconnectCPU})
	w.WriteString("### Publishing\n\n")
	var pub []figure
	for _, s := range []string{scenarioFanin, scenarioFanout} {
		for _, q := range []int{0, 1} {
			pub = append(pub, messageFigures(s, q)...)
		}
	}
	r.figureTable(&w, pub)
	w.WriteString("### Idle connections (one QoS 1 subscription each)\n\n")
	r.figureTable(&w, []figure{figIdleRSS, figIdleHeap, figIdleStack, figIdleG, figIdleConnectS, figIdleP50, figIdleP99, figIdleLost})

	r.writeRatios(&w)
	r.writeCryptoFloor(&w)
	r.writeReconnectFloor(&w)
	r.writeDefaults(&w)
	r.writeProfiles(&w, "### Profiles of idmq-jwt (top frames, `go tool pprof -top`)\n\n")
	r.writeFailures(&w)
	return w.String()
}

// writeRatios sets idmq-jwt against Mosquitto, allow-all, and, for the connect storm, allow-all plus one
// bare verify per CONNECT (the floor an RS256 connect cannot go below).
func (r *benchRun) writeRatios(w *strings.Builder) {
	w.WriteString("### Ratios\n\n| figure | idmq-jwt / mosquitto | idmq-jwt / idmq-allow | idmq-jwt / idmq-allow-verify |\n|---|---:|---:|---:|\n")
	ratioFigs := []figure{figConnectRate, figConnectCPU, figReconnectRate, figReconnectCPU}
	for _, s := range []string{scenarioFanin, scenarioFanout} {
		for _, q := range []int{0, 1} {
			mf := messageFigures(s, q)
			ratioFigs = append(ratioFigs, mf[0], mf[1], mf[3])
		}
	}
	ratioFigs = append(ratioFigs, figIdleRSS, figIdleHeap)
	for _, f := range ratioFigs {
		a, oka := r.ratio(labelJWT, labelMosq, f)
		b, okb := r.ratio(labelJWT, labelAllow, f)
		c, okc := r.ratio(labelJWT, labelVerify, f)
		if oka || okb || okc {
			fmt.Fprintf(w, "| %s | %s | %s | %s |\n", f.name, formatRatio(a, oka), formatRatio(b, okb), formatRatio(c, okc))
		}
	}
	w.WriteString("\n")
}

// writeReconnectFloor sets what idmq's hooks cost per cached reconnect, measured alone, beside the storms.
func (r *benchRun) writeReconnectFloor(w *strings.Builder) {
	w.WriteString("### Reconnect floor\n\n")
	if r.hooksNs == 0 {
		w.WriteString("(the hooks benchmark did not run)\n\n")
		return
	}
	w.WriteString("| hooks per reconnect | allow-all CPU/reconnect | floor: (allow-all + hooks) / allow-all | storm: idmq-jwt / idmq-allow |\n|---:|---:|---:|---:|\n")
	row := []string{formatValue(r.hooksNs/1e3, "µs"), "–", "–", "–"}
	if allow, ok := r.value(labelAllow, figReconnectCPU); ok && allow > 0 {
		row[1] = formatValue(allow, "µs")
		row[2] = fmt.Sprintf("%.2f×", (allow+r.hooksNs/1e3)/allow)
		if jwt, ok := r.value(labelJWT, figReconnectCPU); ok {
			row[3] = fmt.Sprintf("%.2f×", jwt/allow)
		}
	}
	w.WriteString("| " + strings.Join(row, " | ") + " |\n\n")
}

// writeCryptoFloor sets the verify benchmark beside the connect storms' cost over allow-all.
func (r *benchRun) writeCryptoFloor(w *strings.Builder) {
	w.WriteString("### Crypto floor\n\n")
	if len(r.verify) == 0 {
		w.WriteString("(the verify benchmark did not run)\n\n")
		return
	}
	w.WriteString("| alg | jwt.Parse | idmq Verify | storm CPU/conn | allow-all CPU/conn | auth+ACL cost (difference) | difference / jwt.Parse | jwt.Parse in the storm |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
	allow, okAllow := r.value(labelAllow, figConnectCPU)
	verifyStorm, okVerify := r.value(labelVerify, figConnectCPU)
	for _, alg := range []string{"RS256", "ES256", "EdDSA"} {
		v := r.verify[alg]
		label := map[string]string{"RS256": labelJWT, "ES256": labelJWT + "-es256", "EdDSA": labelJWT + "-eddsa"}[alg]
		row := []string{alg, "–", "–", "–", "–", "–", "–", "–"}
		if alg == "RS256" && okVerify && okAllow {
			row[7] = formatValue(verifyStorm-allow, "µs")
		}
		if p, ok := v["jwt.Parse"]; ok {
			row[1] = formatValue(p/1e3, "µs")
		}
		if p, ok := v["idmq"]; ok {
			row[2] = formatValue(p/1e3, "µs")
		}
		storm, ok := r.value(label, figConnectCPU)
		if ok {
			row[3] = formatValue(storm, "µs")
		}
		if okAllow {
			row[4] = formatValue(allow, "µs")
		}
		if ok && okAllow {
			row[5] = formatValue(storm-allow, "µs")
			if p, ok := v["jwt.Parse"]; ok && p > 0 {
				row[6] = formatRatio((storm-allow)/(p/1e3), true)
			}
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
	}
	w.WriteString("\n")
}

// writeDefaults compares idmq's per-connection defaults with the mochi values they replace, in the same run.
func (r *benchRun) writeDefaults(w *strings.Builder) {
	if _, ok := r.results[labelJWTMochi]; !ok {
		return
	}
	w.WriteString("### idmq's per-connection defaults vs mochi's\n\n")
	figs := []figure{figConnectRate, figReconnectRate}
	for _, q := range []int{0, 1} {
		figs = append(figs, messageFigures(scenarioFanin, q)[0], messageFigures(scenarioFanin, q)[1])
	}
	for _, q := range []int{0, 1} {
		figs = append(figs, messageFigures(scenarioFanout, q)[1])
	}
	figs = append(figs, figIdleRSS, figIdleHeap)
	w.WriteString("| figure | idmq defaults | mochi defaults | ratio |\n|---|---:|---:|---:|\n")
	for _, f := range figs {
		a, oka := r.value(labelJWT, f)
		b, okb := r.value(labelJWTMochi, f)
		if !oka || !okb {
			continue
		}
		ratio, okr := r.ratio(labelJWT, labelJWTMochi, f)
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", f.name, formatValue(a, f.unit), formatValue(b, f.unit), formatRatio(ratio, okr))
	}
	w.WriteString("\n")
}

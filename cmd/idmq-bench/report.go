package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// runReport is `idmq-bench report`: it reads the results of a bench/compare.sh or bench/scale.sh run (one
// LABEL.jsonl per broker, meta.txt, the verify benchmark, profiles) and writes that run's section of
// BENCHMARKS.md, leaving the other section as it is. Exit 1 when a result shows a failure: a scenario that did
// not run or timed out, a refused connection, a dropped connection, or a lost QoS 1 message.
func runReport(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("idmq-bench report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "run `directory` with LABEL.jsonl files and meta.txt (required)")
	kind := fs.String("kind", "compare", "compare, scale or cluster: which section of the report to (re)write")
	out := fs.String("o", "", "markdown `file` to update in place (required)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *dir == "" || *out == "" || fs.NArg() > 0 || (*kind != "compare" && *kind != "scale" && *kind != "cluster") {
		fmt.Fprintln(stderr, "idmq-bench report: usage: idmq-bench report --dir DIR --kind compare|scale|cluster -o FILE")
		return 2
	}
	run, err := loadRun(*dir)
	if err != nil {
		fmt.Fprintf(stderr, "idmq-bench report: %v\n", err)
		return 1
	}
	var body string
	switch *kind {
	case "compare":
		body = renderCompare(run)
	case "scale":
		body = renderScale(run)
	default:
		body = renderCluster(run)
	}
	if err := replaceSection(*out, *kind, body); err != nil {
		fmt.Fprintf(stderr, "idmq-bench report: %v\n", err)
		return 1
	}
	if len(run.failures) > 0 {
		for _, f := range run.failures {
			fmt.Fprintf(stderr, "idmq-bench report: FAILED: %s\n", f)
		}
		return 1
	}
	return 0
}

// benchRun is everything one compare or scale run left in its directory.
type benchRun struct {
	dir      string
	meta     [][2]string
	labels   []string // in the order of meta's "labels", then any other
	results  map[string][]*result
	failures []string
	verify   map[string]map[string]float64 // alg -> "idmq" | "jwt.Parse" -> ns/op
	hooksNs  float64                       // BenchmarkCachedReconnectHooks ns/op; 0 when it did not run
}

func loadRun(dir string) (*benchRun, error) {
	r := &benchRun{dir: dir, results: map[string][]*result{}, verify: map[string]map[string]float64{}}
	meta, err := readMeta(filepath.Join(dir, "meta.txt"))
	if err != nil {
		return nil, err
	}
	r.meta = meta
	files, err := filepath.Glob(filepath.Join(dir, "*.jsonl"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%s: no *.jsonl results", dir)
	}
	sort.Strings(files)
	for _, f := range files {
		label := strings.TrimSuffix(filepath.Base(f), ".jsonl")
		rs, err := readResults(f)
		if err != nil {
			return nil, err
		}
		r.results[label] = rs
		if len(rs) == 0 {
			r.failures = append(r.failures, fmt.Sprintf("%s: no results (the load generator did not run; see %s.bench.log)", label, label))
		}
		for _, res := range rs {
			r.failures = append(r.failures, resultFailures(label, res)...)
		}
	}
	for _, l := range strings.Fields(metaValue(r.meta, "labels")) {
		if _, ok := r.results[l]; ok {
			r.labels = append(r.labels, l)
		} else {
			r.failures = append(r.failures, fmt.Sprintf("%s: no results file", l))
		}
	}
	for _, f := range files {
		l := strings.TrimSuffix(filepath.Base(f), ".jsonl")
		if !contains(r.labels, l) {
			r.labels = append(r.labels, l)
		}
	}
	if data, err := os.ReadFile(filepath.Join(dir, "verify-bench.txt")); err == nil {
		r.verify = parseVerifyBench(string(data))
	}
	if data, err := os.ReadFile(filepath.Join(dir, "hooks-bench.txt")); err == nil {
		if m := hooksLine.FindStringSubmatch(string(data)); m != nil {
			r.hooksNs, _ = strconv.ParseFloat(m[1], 64)
		}
	}
	return r, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func readMeta(path string) ([][2]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out [][2]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok {
			out = append(out, [2]string{strings.TrimSpace(k), strings.TrimSpace(v)})
		}
	}
	return out, sc.Err()
}

func metaValue(meta [][2]string, key string) string {
	for _, kv := range meta {
		if kv[0] == key {
			return kv[1]
		}
	}
	return ""
}

func readResults(path string) ([]*result, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []*result
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for line := 1; sc.Scan(); line++ {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		r := new(result)
		if err := json.Unmarshal(sc.Bytes(), r); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		out = append(out, r)
	}
	return out, sc.Err()
}

// resultFailures lists what makes a result a failed run (lost QoS 0 messages are measured, not failures).
func resultFailures(label string, r *result) []string {
	name := label + " " + r.Scenario
	if r.QoS != nil {
		name += fmt.Sprintf(" qos%d", *r.QoS)
	}
	var out []string
	if r.Error != "" {
		out = append(out, name+": "+r.Error)
	}
	if r.TimedOut {
		out = append(out, name+": timed out")
	}
	for _, c := range []*connectStats{r.Warmup, r.Connect} {
		if c != nil && c.Failed > 0 {
			out = append(out, fmt.Sprintf("%s: %d of %d connections failed (%s)", name, c.Failed, c.Attempted, topReasons(c.Failures)))
		}
	}
	if r.Dropped > 0 {
		out = append(out, fmt.Sprintf("%s: the broker dropped %d connections (%s)", name, r.Dropped, topReasons(r.DropReasons)))
	}
	if m := r.Messages; m != nil && r.QoS != nil && *r.QoS == 1 && m.Lost > 0 {
		out = append(out, fmt.Sprintf("%s: %d QoS 1 messages lost", name, m.Lost))
	}
	return out
}

// verifyLine matches `BenchmarkVerify/RS256/jwt.Parse-8   1234   56789 ns/op ...`.
var verifyLine = regexp.MustCompile(`^BenchmarkVerify/(\w+)/([\w.]+?)(?:-\d+)?\s+\d+\s+([\d.]+) ns/op`)

// hooksLine matches `BenchmarkCachedReconnectHooks-2   200000   3163 ns/op ...`.
var hooksLine = regexp.MustCompile(`(?m)^BenchmarkCachedReconnectHooks(?:-\d+)?\s+\d+\s+([\d.]+) ns/op`)

func parseVerifyBench(text string) map[string]map[string]float64 {
	out := map[string]map[string]float64{}
	for _, line := range strings.Split(text, "\n") {
		m := verifyLine.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			continue
		}
		if out[m[1]] == nil {
			out[m[1]] = map[string]float64{}
		}
		out[m[1]][m[2]] = v
	}
	return out
}

// replaceSection writes body between this kind's markers in path, keeping the rest of the file.
func replaceSection(path, kind, body string) error {
	begin := fmt.Sprintf("<!-- idmq-bench report %s: begin (generated; edits are overwritten) -->\n", kind)
	end := fmt.Sprintf("<!-- idmq-bench report %s: end -->\n", kind)
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	text := string(old)
	if text == "" {
		text = "# Benchmarks\n\nGenerated by `bench/compare.sh` and `bench/scale.sh` (see `bench/README.md`); each script rewrites only its own section.\n\n"
	}
	section := begin + body + end
	i, j := strings.Index(text, begin), strings.Index(text, end)
	if i >= 0 && j > i {
		text = text[:i] + section + text[j+len(end):]
	} else {
		text = strings.TrimRight(text, "\n") + "\n\n" + section
	}
	return os.WriteFile(path, []byte(text), 0o644)
}

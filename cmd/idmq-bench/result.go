package main

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// result is one JSON line on stdout. Sub-objects appear only for the scenarios that measure them; inside
// them every count is printed, zeros included, so that "lost": 0 is a statement and not an omission.
type result struct {
	Scenario    string         `json:"scenario"`
	Label       string         `json:"label"`
	Transport   string         `json:"transport"`
	Protocol    string         `json:"protocol"`
	QoS         *int           `json:"qos,omitempty"`
	Credentials string         `json:"credentials"` // tokens, users or none
	DurationS   float64        `json:"duration_s"`
	TimedOut    bool           `json:"timed_out"`
	BrokerCPUS  float64        `json:"broker_cpu_s,omitempty"` // with --broker-pid: user+system CPU the broker used during the scenario
	Warmup      *connectStats  `json:"warmup,omitempty"`       // reconnect: the first round, not measured
	Connect     *connectStats  `json:"connect,omitempty"`
	Dropped     int            `json:"dropped"` // connections the broker closed while the scenario held them
	DropReasons map[string]int `json:"drop_reasons,omitempty"`
	Messages    *messageStats  `json:"messages,omitempty"`
	Broker      *brokerStats   `json:"broker,omitempty"`
	SelfRSS     int64          `json:"generator_rss_bytes,omitempty"` // idle: this process, to show the load generator is not the bottleneck
	Error       string         `json:"error,omitempty"`               // the scenario could not run at all
}

type connectStats struct {
	Attempted int            `json:"attempted"`
	Connected int            `json:"connected"`
	Failed    int            `json:"failed"`
	Failures  map[string]int `json:"failures,omitempty"`
	PerSecond float64        `json:"per_s"`
	DurationS float64        `json:"duration_s"`
	ConnackMs latency        `json:"connack_ms"`
}

type messageStats struct {
	Publishers      int            `json:"publishers"`
	Subscribers     int            `json:"subscribers"`
	Sent            int64          `json:"sent"`
	Acked           int64          `json:"acked"` // QoS 1: PUBACKs with a success code
	PublishFailures map[string]int `json:"publish_failures,omitempty"`
	Expected        int64          `json:"expected"` // deliveries that should arrive
	Received        int64          `json:"received"` // unique deliveries
	Lost            int64          `json:"lost"`
	Duplicates      int64          `json:"duplicates"`
	Foreign         int64          `json:"foreign"` // payloads from another publisher or phase
	PublishS        float64        `json:"publish_s"`
	DeliverS        float64        `json:"deliver_s"`
	InPerS          float64        `json:"in_per_s"`
	OutPerS         float64        `json:"out_per_s"`
	LatencyMs       latency        `json:"latency_ms"`
}

type brokerStats struct {
	PID         int      `json:"pid,omitempty"`
	Connections int      `json:"connections"`
	RSS         *perConn `json:"rss_bytes,omitempty"`
	HeapInuse   *perConn `json:"heap_inuse_bytes,omitempty"`
	StackInuse  *perConn `json:"stack_inuse_bytes,omitempty"` // goroutine stacks: not part of the heap
	Goroutines  *perConn `json:"goroutines,omitempty"`
	Errors      []string `json:"errors,omitempty"`
}

// perConn is a broker gauge before and after the connections, and the difference per connection.
type perConn struct {
	Before  float64 `json:"before"`
	After   float64 `json:"after"`
	PerConn float64 `json:"per_conn"`
}

func newPerConn(before, after float64, conns int) *perConn {
	p := &perConn{Before: before, After: after}
	if conns > 0 {
		p.PerConn = round1((after - before) / float64(conns))
	}
	return p
}

func seconds(d time.Duration) float64 { return math.Round(d.Seconds()*1e3) / 1e3 }

func round1(f float64) float64 { return math.Round(f*10) / 10 }

// printTable writes the short human summary.
func printTable(w io.Writer, results []*result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\tqos\tclients ok/fail\tconnect/s\tconnack p50/p99 ms\tmsgs in/s\tmsgs out/s\te2e p50/p99 ms\tlost\tnotes")
	for _, r := range results {
		qos := "-"
		if r.QoS != nil {
			qos = fmt.Sprint(*r.QoS)
		}
		cols := []string{r.Scenario, qos, "-", "-", "-", "-", "-", "-", "-", ""}
		if c := r.Connect; c != nil {
			cols[2] = fmt.Sprintf("%d/%d", c.Connected, c.Failed)
			cols[3] = fmt.Sprintf("%.0f", c.PerSecond)
			cols[4] = fmt.Sprintf("%.2f/%.2f", c.ConnackMs.P50Ms, c.ConnackMs.P99Ms)
		}
		if m := r.Messages; m != nil {
			cols[5] = fmt.Sprintf("%.0f", m.InPerS)
			cols[6] = fmt.Sprintf("%.0f", m.OutPerS)
			cols[7] = fmt.Sprintf("%.2f/%.2f", m.LatencyMs.P50Ms, m.LatencyMs.P99Ms)
			cols[8] = fmt.Sprint(m.Lost)
		}
		var notes []string
		if b := r.Broker; b != nil {
			if b.RSS != nil {
				notes = append(notes, fmt.Sprintf("rss/conn %.0f B", b.RSS.PerConn))
			}
			if b.HeapInuse != nil {
				notes = append(notes, fmt.Sprintf("heap/conn %.0f B", b.HeapInuse.PerConn))
			}
			if b.StackInuse != nil {
				notes = append(notes, fmt.Sprintf("stacks/conn %.0f B", b.StackInuse.PerConn))
			}
			if b.Goroutines != nil {
				notes = append(notes, fmt.Sprintf("goroutines/conn %.2f", b.Goroutines.PerConn))
			}
		}
		if r.Connect != nil && len(r.Connect.Failures) > 0 {
			notes = append(notes, "failures: "+topReasons(r.Connect.Failures))
		}
		if r.Dropped > 0 {
			notes = append(notes, fmt.Sprintf("dropped %d", r.Dropped))
		}
		if r.TimedOut {
			notes = append(notes, "TIMED OUT")
		}
		if r.Error != "" {
			notes = append(notes, "error: "+r.Error)
		}
		cols[9] = strings.Join(notes, "; ")
		fmt.Fprintln(tw, strings.Join(cols, "\t"))
	}
	tw.Flush()
}

// topReasons lists the most frequent failure reasons, most frequent first.
func topReasons(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return m[keys[i]] > m[keys[j]] || (m[keys[i]] == m[keys[j]] && keys[i] < keys[j]) })
	var parts []string
	for i, k := range keys {
		if i == 3 {
			parts = append(parts, "…")
			break
		}
		parts = append(parts, fmt.Sprintf("%s ×%d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

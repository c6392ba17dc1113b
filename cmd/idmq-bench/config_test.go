package main

import (
	"io"
	"strings"
	"testing"
	"time"
)

func TestParseConfigDefaults(t *testing.T) {
	c, err := parseConfig(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != "127.0.0.1:1883" || c.Transport != "tcp" || c.Protocol != 5 || c.Clients != 2000 || c.IdleClients != 10000 {
		t.Errorf("defaults: %+v", c)
	}
	if len(c.Scenarios) != 1 || c.Scenarios[0] != scenarioConnect || len(c.QoS) != 2 {
		t.Errorf("scenarios %v qos %v", c.Scenarios, c.QoS)
	}
	if c.Keepalive != time.Minute || c.ScenarioTimeout != time.Minute || c.TotalTimeout != 10*time.Minute {
		t.Errorf("timeouts: keepalive %s scenario %s total %s", c.Keepalive, c.ScenarioTimeout, c.TotalTimeout)
	}
}

func TestParseConfigRefuses(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string // the flag the error must name
	}{
		{"public address", []string{"--addr", "8.8.8.8:1883"}, "--addr"},
		{"host name", []string{"--addr", "broker.example.com:1883"}, "--addr"},
		{"private address", []string{"--addr", "10.0.0.1:1883"}, "--addr"},
		{"no port", []string{"--addr", "127.0.0.1"}, "--addr"},
		{"remote metrics", []string{"--metrics-url", "http://10.1.1.1:9090/metrics"}, "--metrics-url"},
		{"metrics not http", []string{"--metrics-url", "file:///etc/passwd"}, "--metrics-url"},
		{"unknown transport", []string{"--transport", "quic"}, "--transport"},
		{"unknown protocol", []string{"--protocol", "3.1"}, "--protocol"},
		{"qos 2", []string{"--qos", "0,2"}, "--qos"},
		{"two credential sources", []string{"--tokens", "a", "--users", "b"}, "--tokens"},
		{"auth method on 3.1.1", []string{"--protocol", "3.1.1", "--tokens", "a", "--auth-method", "jwt"}, "--auth-method"},
		{"auth method without tokens", []string{"--auth-method", "jwt"}, "--auth-method"},
		{"receive maximum on 3.1.1", []string{"--protocol", "3.1.1", "--receive-maximum", "10"}, "--receive-maximum"},
		{"zero clients", []string{"--clients", "0"}, "--clients"},
		{"small payload", []string{"--payload-size", "8"}, "--payload-size"},
		{"wildcard topic", []string{"--fanin-topic", "users/%u/#"}, "--fanin-topic"},
		{"fractional keepalive", []string{"--keepalive", "1500ms"}, "--keepalive"},
		{"zero timeout", []string{"--timeout", "0s"}, "--timeout"},
		{"fanin over the cap", []string{"--scenario", "fanin", "--publishers", "60", "--max-clients", "100"}, "--max-clients"},
		{"source ips with a name", []string{"--addr", "localhost:1883", "--source-ips", "2"}, "--source-ips"},
		{"remote subscriber node", []string{"--sub-addr", "10.0.0.2:1883"}, "--sub-addr"},
		{"peer pid not a number", []string{"--broker-pid", "1", "--peer-pids", "2,x"}, "--peer-pids"},
		{"peer pids without broker pid", []string{"--peer-pids", "2"}, "--peer-pids"},
		{"stray argument", []string{"connect"}, "unexpected argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseConfig(tt.args, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one naming %s", err, tt.want)
			}
		})
	}
}

func TestParseConfigAcceptsLoopback(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:1883", "127.8.9.10:1", "[::1]:1883", "localhost:8883"} {
		if _, err := parseConfig([]string{"--addr", addr}, io.Discard); err != nil {
			t.Errorf("%s: %v", addr, err)
		}
	}
}

func TestSourceIPCount(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want int
	}{
		{"small run uses the kernel's choice", []string{"--scenario", "idle", "--idle-clients", "20000"}, 0},
		{"one address per 20,000", []string{"--scenario", "idle", "--idle-clients", "100000"}, 5},
		{"peak over scenarios", []string{"--scenario", "connect,idle", "--clients", "50000", "--idle-clients", "10"}, 3},
		{"explicit", []string{"--source-ips", "7"}, 7},
		{"ipv6 target cannot spread", []string{"--addr", "[::1]:1883", "--scenario", "idle", "--idle-clients", "90000"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseConfig(tt.args, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if got := c.sourceIPCount(); got != tt.want {
				t.Errorf("sourceIPCount = %d, want %d", got, tt.want)
			}
		})
	}
}

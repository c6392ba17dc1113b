package broker

import (
	"errors"
	"strings"
	"testing"
)

func TestClusterConfigErrorsNameFieldAndLine(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       []string
	}{
		{"route without listen", "cluster:\n  node: a\n  nats:\n    routes: [\"nats://127.0.0.1:6222\"]\n",
			[]string{"line 3", "cluster.nats.listen", "required with nats.routes"}},
		{"bad route", "cluster:\n  node: a\n  nats:\n    listen: \"127.0.0.1:6222\"\n    routes: [\"http://x:1\"]\n",
			[]string{"line 5", "cluster.nats.routes[0]", "scheme"}},
		{"bad node name", "cluster:\n  node: \"a b\"\n", []string{"line 2", "cluster.node", "only letters"}},
		{"retention below session expiry", "mqtt:\n  max_session_expiry: 48h\ncluster:\n  node: a\n  retention: 1h\n",
			[]string{"line 5", "cluster.retention", "shorter than mqtt.max_session_expiry"}},
		{"unknown key", "cluster:\n  nodes: a\n", []string{"line 2", "cluster.nodes", `did you mean "node"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml), t.TempDir())
			if err == nil {
				t.Fatal("config loaded, want an error")
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("%v: not a FieldError", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestClusterConfigAbsentIsOneNode(t *testing.T) {
	cfg, err := Parse([]byte("data_dir: d\nlisteners: [{type: tcp, address: \":0\"}]\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Cluster != nil || cfg.clustered() {
		t.Fatal("no cluster section, yet the broker would join a cluster")
	}
}

func TestClusterWarnsAboutNodeLocalSigningKey(t *testing.T) {
	tests := []struct {
		name, auth string
		warn       string
	}{
		{"unset", "", "auth.signing_key_file is not"},
		{"inside data_dir", "auth:\n  signing_key_file: d/key.pem\n", "inside data_dir"},
		{"shared path", "auth:\n  signing_key_file: /etc/idmq/shared.pem\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg, err := Parse([]byte("data_dir: d\nlisteners: [{type: tcp, address: \":0\"}]\n"+tt.auth+"cluster:\n  node: n1\n"), dir)
			if err != nil {
				t.Fatal(err)
			}
			got := strings.Join(cfg.Warnings(), "\n")
			if tt.warn == "" && strings.Contains(got, "signing_key_file") {
				t.Fatalf("unexpected warning: %s", got)
			}
			if !strings.Contains(got, tt.warn) {
				t.Fatalf("warnings %q lack %q", got, tt.warn)
			}
			if cfg.Cluster.NATS.StoreDir == "" || cfg.Cluster.Replicas != 1 {
				t.Fatalf("defaults not applied: %+v", cfg.Cluster)
			}
		})
	}
}

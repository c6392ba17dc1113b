package broker

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
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

// TestClusteredBrokerOneNode: a broker with a cluster section (one node, no routes) joins, keeps no local store
// or write-ahead log, reports the cluster in /readyz and lists itself in GET /v1/cluster.
func TestClusteredBrokerOneNode(t *testing.T) {
	dataDir := t.TempDir()
	yaml := "data_dir: " + dataDir + `
listeners: [{type: tcp, address: "127.0.0.1:0"}]
http: {address: "127.0.0.1:0", admin_keys: ["admin-key-0123456789abcdef-0123"]}
auth: {providers: [{name: local, type: local}]}
acl: {rules: [{topic: "users/%u/#", access: pubsub}]}
cluster: {node: solo}
`
	cfg, err := Parse([]byte(yaml), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	for _, f := range []string{"idmq.db", walFileName} {
		if _, err := os.Stat(filepath.Join(dataDir, f)); err == nil {
			t.Errorf("%s exists: a cluster node keeps no local store or log", f)
		}
	}
	base := "http://" + b.Addresses()["http"]
	var ready struct {
		Status  string `json:"status"`
		Cluster *bool  `json:"cluster"`
	}
	if code := getJSON(t, base+"/readyz", "", &ready); code != 200 || ready.Cluster == nil || !*ready.Cluster {
		t.Fatalf("/readyz %d %+v", code, ready)
	}
	var st struct {
		Node  string `json:"node"`
		Ready bool   `json:"ready"`
		Nodes []struct {
			Name string `json:"name"`
		} `json:"nodes"`
	}
	if code := getJSON(t, base+"/v1/cluster", "", &st); code != 401 {
		t.Fatalf("/v1/cluster without the admin key: %d", code)
	}
	if code := getJSON(t, base+"/v1/cluster", "admin-key-0123456789abcdef-0123", &st); code != 200 || st.Node != "solo" || !st.Ready ||
		len(st.Nodes) != 1 || st.Nodes[0].Name != "solo" {
		t.Fatalf("/v1/cluster %d %+v", code, st)
	}
}

func getJSON(t *testing.T, url, key string, v any) int {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_ = json.NewDecoder(resp.Body).Decode(v)
	return resp.StatusCode
}

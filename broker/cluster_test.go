package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/idmq/idmq/cluster"
	"github.com/idmq/idmq/internal/testkit"
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
	b := startBroker(t, cfg, slog.New(slog.DiscardHandler))
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

// TestClusterNodeAnswersWhileJoining: a node waiting for a quorum of its cluster answers /healthz 200 and
// /readyz 503 (cluster false) while New waits, and /readyz 200 once its peers came, it joined and its
// listeners accept clients.
func TestClusterNodeAnswersWhileJoining(t *testing.T) {
	routes := []string{}
	for range 3 {
		routes = append(routes, fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t)))
	}
	httpAddr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	yaml := "data_dir: " + t.TempDir() + `
listeners: [{type: tcp, address: "127.0.0.1:0"}]
http: {address: "` + httpAddr + `"}
auth: {providers: [{name: local, type: local}]}
acl: {rules: [{topic: "users/%u/#", access: pubsub}]}
cluster: {node: joining, nats: {listen: "` + routes[0] + `", routes: ["nats://` + routes[1] + `", "nats://` + routes[2] + `"]}}
`
	cfg, err := Parse([]byte(yaml), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		b   *Broker
		err error
	}
	done := make(chan result, 1)
	go func() {
		b, err := New(cfg, slog.New(slog.DiscardHandler))
		done <- result{b, err}
	}()
	var ready struct {
		Status  string `json:"status"`
		Cluster *bool  `json:"cluster"`
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err == nil {
			_ = json.NewDecoder(resp.Body).Decode(&ready)
			resp.Body.Close()
			if resp.StatusCode != 503 || ready.Cluster == nil || *ready.Cluster || ready.Status != "not_ready" {
				t.Fatalf("/readyz while joining: %d %+v; want 503, cluster false", resp.StatusCode, ready)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz does not answer while the node joins: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code := getJSON(t, "http://"+httpAddr+"/healthz", "", &struct{}{}); code != 200 {
		t.Fatalf("/healthz while joining: %d", code)
	}
	if code := getJSON(t, "http://"+httpAddr+"/v1/clients", "", &struct{}{}); code != 503 {
		t.Fatalf("/v1/clients while joining: %d, want 503", code)
	}
	select {
	case r := <-done:
		t.Fatalf("New returned without a quorum: %v", r.err)
	default:
	}

	// The two peers come: a quorum forms and the node joins.
	peers := make([]*cluster.Cluster, 2)
	peerErrs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range peers {
		pc := cluster.Config{Node: fmt.Sprintf("peer%d", i+1), Replicas: 3, NATS: cluster.NATSConfig{Listen: routes[i+1],
			Routes: []string{"nats://" + routes[0], "nats://" + routes[2-i]}}}
		pc.SetDefaults(t.TempDir())
		wg.Go(func() { peers[i], peerErrs[i] = cluster.Start(context.Background(), pc, cluster.Options{}) })
	}
	var r result
	select {
	case r = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("the node did not join once its peers were up")
	}
	wg.Wait() // two of three make a quorum: New may return before the second peer did
	for i, p := range peers {
		if p != nil {
			t.Cleanup(func() { _ = p.Close() })
		}
		if peerErrs[i] != nil {
			t.Fatalf("peer%d: %v", i+1, peerErrs[i])
		}
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	if code := getJSON(t, "http://"+httpAddr+"/readyz", "", &ready); code != 503 {
		t.Fatalf("/readyz after joining, before Start: %d, want 503 (listeners not up)", code)
	}
	if err := r.b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.b.Close(context.Background()) })
	if code := getJSON(t, "http://"+httpAddr+"/readyz", "", &ready); code != 200 || !*ready.Cluster {
		t.Fatalf("/readyz after Start: %d %+v", code, ready)
	}
}

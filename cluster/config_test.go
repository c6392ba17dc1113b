package cluster

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func parseConfig(t *testing.T, src string) Config {
	t.Helper()
	var c Config
	dec := yaml.NewDecoder(strings.NewReader(src))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("decode: %v", err)
	}
	return c
}

// TestConfigYAML: the keys are exactly those of issue 18's example.
func TestConfigYAML(t *testing.T) {
	c := parseConfig(t, `
node: node-a
nats:
  listen: "0.0.0.0:6222"
  routes: ["nats://10.0.0.2:6222", "nats://10.0.0.3:6222"]
  client_listen: ""
  url: ""
  credentials_file: ""
  store_dir: ""
replicas: 3
retention: 24h
`)
	c.SetDefaults("/var/lib/idmq")
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	want := Config{Node: "node-a", Replicas: 3, Retention: 24 * time.Hour, NATS: NATSConfig{
		Listen: "0.0.0.0:6222", Routes: []string{"nats://10.0.0.2:6222", "nats://10.0.0.3:6222"},
		StoreDir: "/var/lib/idmq/jetstream"}}
	if c.Node != want.Node || c.Replicas != want.Replicas || c.Retention != want.Retention ||
		c.NATS.StoreDir != want.NATS.StoreDir || len(c.NATS.Routes) != 2 {
		t.Fatalf("got %+v, want %+v", c, want)
	}
}

func TestConfigDefaults(t *testing.T) {
	host, _ := os.Hostname()
	tests := []struct {
		name         string
		cfg          Config
		wantReplicas int
	}{
		{"one node", Config{}, 1},
		{"two nodes", Config{NATS: NATSConfig{Listen: ":6222", Routes: []string{"nats://b:6222"}}}, 2},
		{"three nodes", Config{NATS: NATSConfig{Listen: ":6222", Routes: []string{"nats://b:1", "nats://c:1"}}}, 3},
		{"five nodes cap at 3", Config{NATS: NATSConfig{Listen: ":6222",
			Routes: []string{"nats://b:1", "nats://c:1", "nats://d:1", "nats://e:1"}}}, 3},
		{"explicit kept", Config{Replicas: 1, NATS: NATSConfig{Listen: ":6222", Routes: []string{"nats://b:1"}}}, 1},
		{"external: decided at Start", Config{NATS: NATSConfig{URL: "nats://x:4222"}}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.cfg
			c.SetDefaults("/data")
			if c.Replicas != tt.wantReplicas {
				t.Errorf("replicas = %d, want %d", c.Replicas, tt.wantReplicas)
			}
			if c.Retention != DefaultRetention {
				t.Errorf("retention = %s", c.Retention)
			}
			if c.Node != host {
				t.Errorf("node = %q, want the hostname %q", c.Node, host)
			}
			if wantDir := filepath.Join("/data", "jetstream"); !c.External() && c.NATS.StoreDir != wantDir {
				t.Errorf("store_dir = %q, want %q", c.NATS.StoreDir, wantDir)
			}
			if c.External() && c.NATS.StoreDir != "" {
				t.Errorf("external config got a store_dir %q", c.NATS.StoreDir)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	creds := filepath.Join(t.TempDir(), "user.creds")
	if err := os.WriteFile(creds, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		yaml  string
		paths []string // Path of each error, in order; none: valid
		text  string   // a fragment of the message
	}{
		{"embedded three nodes", "node: a\nnats: {listen: ':6222', routes: ['nats://b:6222', 'nats://c:6222']}", nil, ""},
		{"external with creds", "node: a\nnats: {url: 'tls://n1:4222,tls://n2:4222', credentials_file: " + creds + "}", nil, ""},
		{"url and listen", "node: a\nnats: {url: 'nats://x:4222', listen: ':6222', routes: ['nats://b:1']}",
			[]string{"nats.listen", "nats.routes"}, "cannot be combined with nats.url"},
		{"url and store_dir", "node: a\nnats: {url: 'nats://x:4222', store_dir: /x}", []string{"nats.store_dir"}, ""},
		{"url and client_listen", "node: a\nnats: {url: 'nats://x:4222', client_listen: ':4222'}", []string{"nats.client_listen"}, ""},
		{"credentials without url", "node: a\nnats: {credentials_file: /x.creds}", []string{"nats.credentials_file"}, "only with nats.url"},
		{"credentials file missing", "node: a\nnats: {url: 'nats://x:1', credentials_file: /nonexistent.creds}", []string{"nats.credentials_file"}, "no such file"},
		{"bad route scheme", "node: a\nnats: {listen: ':6222', routes: ['nats://b:6222', 'http://c:6222']}", []string{"nats.routes[1]"}, "scheme"},
		{"route without port", "node: a\nnats: {listen: ':6222', routes: ['nats://b']}", []string{"nats.routes[0]"}, "port"},
		{"routes without listen", "node: a\nnats: {routes: ['nats://b:6222']}", []string{"nats.listen"}, "required"},
		{"listen without routes", "node: a\nnats: {listen: ':6222'}", []string{"nats.routes"}, "required with nats.listen"},
		{"bad listen", "node: a\nnats: {listen: '6222', routes: ['nats://b:6222']}", []string{"nats.listen"}, "host:port"},
		{"bad port", "node: a\nnats: {listen: ':99999', routes: ['nats://b:6222']}", []string{"nats.listen"}, "port"},
		{"bad url", "node: a\nnats: {url: 'mqtt://x:1'}", []string{"nats.url"}, "scheme"},
		{"url password never echoed", "node: a\nnats: {url: 'http://u:s3cret@x:1'}", []string{"nats.url"}, "xxxxx"},
		{"replicas too many", "node: a\nreplicas: 6\nnats: {listen: ':1', routes: ['nats://b:1']}", []string{"replicas"}, "1 to 5"},
		{"replicas negative", "node: a\nreplicas: -1", []string{"replicas"}, ""},
		{"replicas beyond the routes", "node: a\nreplicas: 3\nnats: {listen: ':1', routes: ['nats://b:1']}", []string{"replicas"}, "need 3 nodes"},
		{"replicas without a cluster", "node: a\nreplicas: 3", []string{"replicas"}, "names 0 other"},
		{"retention negative", "node: a\nretention: -1h", []string{"retention"}, "positive"},
		{"node with a dot", "node: a.b", []string{"node"}, "only letters"},
		{"node with a space", "node: 'a b'", []string{"node"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := parseConfig(t, tt.yaml)
			c.SetDefaults(t.TempDir())
			err := c.Validate()
			if len(tt.paths) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %v", tt.paths)
			}
			var got []string
			for _, e := range flatten(err) {
				var fe *FieldError
				if !errors.As(e, &fe) || !strings.HasPrefix(e.Error(), fe.Path+": ") {
					t.Fatalf("%v is not a FieldError formatted as path: reason", e)
				}
				got = append(got, fe.Path)
			}
			if strings.Join(got, ",") != strings.Join(tt.paths, ",") {
				t.Fatalf("error paths %q, want %q (%v)", got, tt.paths, err)
			}
			if !strings.Contains(err.Error(), tt.text) {
				t.Fatalf("error %q does not mention %q", err, tt.text)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("error leaks the URL password: %v", err)
			}
		})
	}
}

func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

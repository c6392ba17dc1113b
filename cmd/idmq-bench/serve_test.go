package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/idmq/idmq/internal/testkit"
)

// writeIdmqConfig is a loopback idmq config with a local provider and the users/%u/# rule.
func writeIdmqConfig(t *testing.T, dir string, tcp int, keyFile string) string {
	t.Helper()
	key := ""
	if keyFile != "" {
		key = "  signing_key_file: " + keyFile + "\n"
	}
	cfg := fmt.Sprintf(`data_dir: ./data
log: {level: warn}
listeners:
  - {type: tcp, address: "127.0.0.1:%d"}
http: {address: "127.0.0.1:0"}
storage: {type: memory}
auth:
%s  providers:
    - {name: local, type: local}
acl:
  rules:
    - {topic: "users/%%u/#", access: pubsub}
`, tcp, key)
	path := filepath.Join(dir, "idmq.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startServe runs `idmq-bench serve` in-process until the test ends.
func startServe(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var stderr testkit.LogBuffer
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if code := runServe(ctx, args, &stderr); code != 0 {
			t.Errorf("serve exit %d:\n%s", code, stderr.String())
		}
	}()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	return stderr.WaitFor(t, "idmq-bench serve: ready", 10*time.Second)
}

// Without --allow-all the broker is idmq's: a client without a token is refused. With it, the same client
// connects and may publish outside users/%u/.
func TestServeAllowAllReplacesAuthAndACL(t *testing.T) {
	tests := []struct {
		name      string
		allowAll  bool
		connected int
	}{
		{name: "idmq auth", allowAll: false, connected: 0},
		{name: "allow-all", allowAll: true, connected: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			port := testkit.FreePort(t)
			args := []string{"-c", writeIdmqConfig(t, t.TempDir(), port, "")}
			if tt.allowAll {
				args = append(args, "--allow-all")
			}
			log := startServe(t, args...)
			if tt.allowAll != strings.Contains(log, "authentication and ACL are OFF") {
				t.Errorf("allow-all %v but the log says:\n%s", tt.allowAll, log)
			}
			results, stderr := runBench(t, "--addr", fmt.Sprintf("127.0.0.1:%d", port), "--scenario", "connect",
				"--clients", "3", "--timeout", "10s")
			if c := results[0].Connect; c == nil || c.Connected != tt.connected {
				t.Fatalf("connected %+v, want %d\n%s", c, tt.connected, stderr)
			}
		})
	}
}

func TestServeRefusesBadFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no config", nil, "usage"},
		{"remote pprof", []string{"-c", "x.yaml", "--pprof", "192.0.2.1:6060"}, "--pprof"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			if code := runServe(context.Background(), tt.args, &stderr); code != 2 || !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("exit %d, stderr %q; want 2 and %q", code, stderr.String(), tt.want)
			}
		})
	}
}

// --allow-all-verify is a baseline only if it really verifies: tokens signed with the local key connect,
// tokens signed with another key are refused.
func TestServeAllowAllVerifyChecksEachPassword(t *testing.T) {
	dir := t.TempDir()
	keyFile, otherKey := filepath.Join(dir, "key.pem"), filepath.Join(dir, "other.pem")
	for _, k := range []string{keyFile, otherKey} {
		if code := runKeygen([]string{"--alg", "RS256", "-o", k}, new(bytes.Buffer)); code != 0 {
			t.Fatal("keygen failed")
		}
	}
	port := testkit.FreePort(t)
	cfg := writeIdmqConfig(t, dir, port, keyFile)
	mint := func(key, out string) string {
		c := writeIdmqConfig(t, t.TempDir(), testkit.FreePort(t), key)
		var stderr bytes.Buffer
		if code := runMint([]string{"-c", c, "-n", "3", "-o", out}, new(bytes.Buffer), &stderr); code != 0 {
			t.Fatalf("mint: %s", stderr.String())
		}
		return out
	}
	good, forged := mint(keyFile, filepath.Join(dir, "good.txt")), mint(otherKey, filepath.Join(dir, "forged.txt"))
	log := startServe(t, "-c", cfg, "--allow-all-verify")
	if !strings.Contains(log, "allow-all-plus-verify") {
		t.Errorf("the log does not name the baseline hook:\n%s", log)
	}
	for _, tt := range []struct {
		name, tokens string
		connected    int
	}{{"signed with the local key", good, 3}, {"signed with another key", forged, 0}} {
		t.Run(tt.name, func(t *testing.T) {
			results, stderr := runBench(t, "--addr", fmt.Sprintf("127.0.0.1:%d", port), "--scenario", "connect",
				"--clients", "3", "--tokens", tt.tokens, "--timeout", "10s")
			if c := results[0].Connect; c == nil || c.Connected != tt.connected {
				t.Fatalf("connected %+v, want %d\n%s", c, tt.connected, stderr)
			}
		})
	}
}

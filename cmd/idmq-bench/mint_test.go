package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/idmq/idmq/internal/testkit"
)

func typeName(v any) string { return reflect.TypeOf(v).String() }

// Tokens minted with a generated key carry the key's algorithm, sub = the username of their line, and verify
// against the key's public half; the broker started from the same config accepts them.
func TestMintTokensAreAcceptedByTheBroker(t *testing.T) {
	for _, alg := range []string{"RS256", "ES256", "EdDSA"} {
		t.Run(alg, func(t *testing.T) {
			dir := t.TempDir()
			keyFile := filepath.Join(dir, "key.pem")
			if code := runKeygen([]string{"--alg", alg, "-o", keyFile}, new(bytes.Buffer)); code != 0 {
				t.Fatal("keygen failed")
			}
			port := testkit.FreePort(t)
			cfg := writeIdmqConfig(t, dir, port, keyFile)
			tokens := filepath.Join(dir, "tokens.txt")
			var stderr bytes.Buffer
			if code := runMint([]string{"-c", cfg, "-n", "5", "--username-template", "dev-%d", "-o", tokens}, new(bytes.Buffer), &stderr); code != 0 {
				t.Fatalf("mint exit %d: %s", code, stderr.String())
			}
			f, err := os.Open(tokens)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var lines []string
			for sc := bufio.NewScanner(f); sc.Scan(); {
				lines = append(lines, sc.Text())
			}
			if len(lines) != 5 {
				t.Fatalf("%d lines, want 5", len(lines))
			}
			for i, line := range lines {
				user, token, ok := strings.Cut(line, "\t")
				if !ok || user != fmt.Sprintf("dev-%d", i) {
					t.Fatalf("line %d: user %q", i, user)
				}
				parsed, _, err := jwt.NewParser().ParseUnverified(token, jwt.MapClaims{})
				if err != nil {
					t.Fatal(err)
				}
				if parsed.Method.Alg() != alg || parsed.Claims.(jwt.MapClaims)["sub"] != user {
					t.Errorf("line %d: alg %s sub %v", i, parsed.Method.Alg(), parsed.Claims.(jwt.MapClaims)["sub"])
				}
			}
			startServe(t, "-c", cfg)
			results, out := runBench(t, "--addr", fmt.Sprintf("127.0.0.1:%d", port), "--tokens", tokens,
				"--scenario", "connect", "--clients", "5", "--timeout", "10s")
			if c := results[0].Connect; c.Connected != 5 {
				t.Fatalf("connected %d of 5: %v\n%s", c.Connected, c.Failures, out)
			}
		})
	}
}

func TestMintRefusesBadArguments(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no count", []string{"-c", "x.yaml"}, 2, "usage"},
		{"too many", []string{"-c", "x.yaml", "-n", "2000000"}, 2, "usage"},
		{"missing config", []string{"-c", "/nonexistent/idmq.yaml", "-n", "1"}, 1, "/nonexistent/idmq.yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := runMint(tt.args, &stdout, &stderr); code != tt.code || !strings.Contains(stderr.String(), tt.want) || stdout.Len() != 0 {
				t.Errorf("exit %d, stderr %q, stdout %q; want %d and %q", code, stderr.String(), stdout.String(), tt.code, tt.want)
			}
		})
	}
}

package main

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKeygenWritesAPrivatePKCS8Key(t *testing.T) {
	tests := []struct {
		alg, keyType string
	}{
		{"RS256", "*rsa.PrivateKey"},
		{"ES256", "*ecdsa.PrivateKey"},
		{"EdDSA", "ed25519.PrivateKey"},
	}
	for _, tt := range tests {
		t.Run(tt.alg, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "key.pem")
			var stderr bytes.Buffer
			if code := runKeygen([]string{"--alg", tt.alg, "-o", path}, &stderr); code != 0 {
				t.Fatalf("exit %d: %s", code, stderr.String())
			}
			st, err := os.Stat(path)
			if err != nil || st.Mode().Perm() != 0o600 {
				t.Fatalf("key file mode %v, %v; want 0600", st.Mode(), err)
			}
			data, _ := os.ReadFile(path)
			block, _ := pem.Decode(data)
			if block == nil || block.Type != "PRIVATE KEY" {
				t.Fatalf("not a PKCS#8 PEM block: %q", data)
			}
			key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			if got := typeName(key); got != tt.keyType {
				t.Errorf("key type %s, want %s", got, tt.keyType)
			}
		})
	}
}

func TestKeygenRefusesAnUnknownAlg(t *testing.T) {
	var stderr bytes.Buffer
	if code := runKeygen([]string{"--alg", "HS256", "-o", filepath.Join(t.TempDir(), "k")}, &stderr); code != 2 || !strings.Contains(stderr.String(), "HS256") {
		t.Errorf("exit %d, stderr %q", code, stderr.String())
	}
}

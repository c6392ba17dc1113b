package authhook

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/idmq/idmq/internal/testkit"
)

// Minted tokens have exactly the Cloud IoT shape and verify through a devices provider.
func TestMintDeviceToken(t *testing.T) {
	keys := map[string]testkit.Key{"RS256": testkit.NewKey(t, "RS256", ""), "ES256": testkit.NewKey(t, "ES256", ""), "EdDSA": testkit.NewKey(t, "EdDSA", "")}
	cfg := devicesConfig(
		DeviceConfig{ID: "rsa", Keys: []DeviceKey{{PEM: publicPEM(t, keys["RS256"])}}},
		DeviceConfig{ID: "ec", Keys: []DeviceKey{{PEM: publicPEM(t, keys["ES256"])}}},
		DeviceConfig{ID: "ed", Keys: []DeviceKey{{PEM: publicPEM(t, keys["EdDSA"])}}},
	)
	cfg.Providers[0].Algorithms = []string{"RS256", "ES256", "EdDSA"}
	h, err := New(Options{Config: cfg, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Stop()
	now := time.Now()
	tests := []struct {
		name    string
		device  string
		key     string
		alg     string
		ttl     time.Duration
		wantErr string
	}{
		{name: "RSA, alg from the key", device: "rsa", key: "RS256", ttl: time.Hour},
		{name: "EC, alg named", device: "ec", key: "ES256", alg: "ES256", ttl: 20 * time.Minute},
		{name: "Ed25519", device: "ed", key: "EdDSA", ttl: 24 * time.Hour},
		{name: "alg not the key's", key: "ES256", alg: "RS256", ttl: time.Hour, wantErr: "EC keys sign ES256, not \"RS256\""},
		{name: "HS256", key: "RS256", alg: "HS256", ttl: time.Hour, wantErr: "not \"HS256\""},
		{name: "ttl over 24h", key: "RS256", ttl: 25 * time.Hour, wantErr: "ttl must be between 1s and 24h0m0s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := MintDeviceToken(keys[tt.key].Signer, testProject, tt.alg, tt.ttl, now)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			parts := strings.Split(tok, ".")
			var header, claims map[string]any
			for i, v := range []*map[string]any{&header, &claims} {
				raw, err := base64.RawURLEncoding.DecodeString(parts[i])
				if err != nil {
					t.Fatalf("part %d is not base64url without padding: %v", i, err)
				}
				if err := json.Unmarshal(raw, v); err != nil {
					t.Fatal(err)
				}
			}
			if header["alg"] != tt.key || header["typ"] != "JWT" || len(header) != 2 {
				t.Fatalf("header = %v", header)
			}
			var names []string
			for k := range claims {
				names = append(names, k)
			}
			slices.Sort(names)
			if !slices.Equal(names, []string{"aud", "exp", "iat"}) || claims["aud"] != testProject ||
				claims["exp"].(float64)-claims["iat"].(float64) != tt.ttl.Seconds() {
				t.Fatalf("claims = %v", claims)
			}
			id, err := h.verify(tok, "", tt.device)
			if err != nil || id.Username != tt.device {
				t.Fatalf("verify: %+v, %v", id, err)
			}
		})
	}
}

// ReadPrivateKey reads the files the Cloud IoT and ClearBlade guides have devices generate with OpenSSL.
func TestReadPrivateKey(t *testing.T) {
	dir := t.TempDir()
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, _ := x509.MarshalECPrivateKey(ec)
	rsaKey := testkit.NewKey(t, "RS256", "")
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(rsaKey.Signer)
	params := pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}})
	tests := []struct {
		name    string
		data    []byte
		wantErr string
	}{
		{name: "openssl genpkey RSA (PKCS#8)", data: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})},
		{name: "openssl ecparam -genkey (with EC PARAMETERS)", data: append(params, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER})...)},
		{name: "a public key", data: []byte(publicPEM(t, rsaKey)), wantErr: `unsupported PEM block "PUBLIC KEY"`},
		{name: "empty", data: nil, wantErr: "no PEM private key block"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, string(rune('a'+i))+".pem")
			if err := os.WriteFile(path, tt.data, 0o600); err != nil {
				t.Fatal(err)
			}
			key, err := ReadPrivateKey(path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, err := MintDeviceToken(key, testProject, "", time.Hour, time.Now()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

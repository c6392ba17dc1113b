package authhook

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/idmq/idmq/internal/testkit"
)

func TestParseDeviceKeys(t *testing.T) {
	rsaKey := testkit.NewKey(t, "RS256", "")
	ecKey := testkit.NewKey(t, "ES256", "")
	edKey := testkit.NewKey(t, "EdDSA", "")
	notAfter := time.Now().Add(time.Hour).Truncate(time.Second)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pemOf := func(typ string, der []byte) string {
		return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
	}
	pkix := func(pub any) string {
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		return pemOf("PUBLIC KEY", der)
	}
	privDER, _ := x509.MarshalPKCS8PrivateKey(ecKey.Signer)

	tests := []struct {
		name     string
		data     string
		keys     int
		expires  time.Time // of the first key
		errMatch string
	}{
		{name: "RSA public key", data: publicPEM(t, rsaKey), keys: 1},
		{name: "RSA PKCS#1 public key", data: pemOf("RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(&rsaKey.Signer.(*rsa.PrivateKey).PublicKey)), keys: 1},
		{name: "certificate expires with it", data: selfSignedPEM(t, ecKey, notAfter), keys: 1, expires: notAfter},
		{name: "three blocks with text between", data: "rsa:\n" + publicPEM(t, rsaKey) + "ec:\n" + publicPEM(t, ecKey) + selfSignedPEM(t, edKey, notAfter), keys: 3},
		{name: "four blocks", data: strings.Repeat(publicPEM(t, ecKey), 4), errMatch: "4 keys, a device has at most 3"},
		{name: "a private key", data: pemOf("PRIVATE KEY", privDER), errMatch: "a private key does not belong in the registry"},
		{name: "RSA 1024", data: pkix(&small.PublicKey), errMatch: "RSA key of 1024 bits is too small"},
		{name: "EC P-384", data: pkix(&p384.PublicKey), errMatch: "EC key on P-384: ES256 needs P-256"},
		{name: "not PEM", data: "hello", errMatch: "no PEM public key or certificate"},
		{name: "broken DER", data: pemOf("PUBLIC KEY", []byte{1, 2, 3}), errMatch: "PEM block 1: PUBLIC KEY:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys, err := parseDeviceKeys([]byte(tt.data))
			if tt.errMatch != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errMatch) {
					t.Fatalf("err = %v, want %q", err, tt.errMatch)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(keys) != tt.keys || !keys[0].expires.Equal(tt.expires) {
				t.Fatalf("got %d keys, first expires %v; want %d, %v", len(keys), keys[0].expires, tt.keys, tt.expires)
			}
		})
	}
}

// writeAtomically writes as a deployment tool would: a temporary file renamed into place.
func writeAtomically(t *testing.T, path, data string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// untilCONNACK connects (MQTT 5) every 100 ms until the CONNACK reason is want, and returns how long it took.
func untilCONNACK(t *testing.T, b *testBroker, clientID string, token func() string, want byte, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		_, ca := connectV5(t, b.addr, passwordConnect(clientID, "", token()))
		if ca.ReasonCode == want {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("CONNACK still 0x%02X (%s) after %s, want 0x%02X", ca.ReasonCode, ca.Properties.ReasonString, within, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A running broker picks up key files dropped into registry_dir, replaced, and removed, without a restart.
func TestRegistryDirReload(t *testing.T) {
	dir := t.TempDir()
	first, second := testkit.NewKey(t, "RS256", ""), testkit.NewKey(t, "ES256", "")
	cfg := Config{Providers: []ProviderConfig{{Name: "fleet", Type: TypeDevices, Project: testProject, RegistryDir: dir}}}
	b := startBroker(t, cfg, nil)
	tokenOf := func(k testkit.Key) func() string {
		return func() string { return k.SignWithoutKID(t, deviceClaims(time.Now())) }
	}
	file := filepath.Join(dir, "sensor-7.pem")

	if _, ca := connectV5(t, b.addr, passwordConnect("sensor-7", "", tokenOf(first)())); ca.ReasonCode != 0x86 || ca.Properties.ReasonString != string(ReasonUnknownDevice) {
		t.Fatalf("before the file: 0x%02X %q", ca.ReasonCode, ca.Properties.ReasonString)
	}
	// Written in place, not renamed: a scan may read it half-written, and must read it again.
	if err := os.WriteFile(file, []byte(publicPEM(t, first)), 0o644); err != nil {
		t.Fatal(err)
	}
	took := untilCONNACK(t, b, "sensor-7", tokenOf(first), 0, 5*time.Second)
	t.Logf("file added: accepted after %s", took.Round(time.Millisecond))

	writeAtomically(t, file, selfSignedPEM(t, second, time.Now().Add(time.Hour)))
	took = untilCONNACK(t, b, "sensor-7", tokenOf(second), 0, 5*time.Second)
	t.Logf("file replaced: new key accepted after %s", took.Round(time.Millisecond))
	if _, ca := connectV5(t, b.addr, passwordConnect("sensor-7", "", tokenOf(first)())); ca.ReasonCode != 0x86 || ca.Properties.ReasonString != string(ReasonInvalidSignature) {
		t.Fatalf("replaced key still accepted: 0x%02X %q", ca.ReasonCode, ca.Properties.ReasonString)
	}

	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	took = untilCONNACK(t, b, "sensor-7", tokenOf(second), 0x86, 5*time.Second)
	t.Logf("file removed: refused after %s", took.Round(time.Millisecond))
	code, _ := connectV3(t, b.addr, "sensor-7", "unused", tokenOf(second)())
	if code != 0x04 {
		t.Fatalf("the next CONNECT after removal: 0x%02X, want 0x04", code)
	}
	logs := b.logs.String()
	if !strings.Contains(logs, `"msg":"authhook: device registry reloaded"`) || !strings.Contains(logs, `"removed":"sensor-7"`) {
		t.Fatalf("reload log:\n%s", logs)
	}
}

func TestRegistryDirContents(t *testing.T) {
	dir := t.TempDir()
	key := testkit.NewKey(t, "ES256", "")
	files := map[string]string{
		"good.pem":        publicPEM(t, key),
		"blocked.pem":     publicPEM(t, key),
		"private.pem":     string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}})),
		"bad$name.pem":    publicPEM(t, key),
		".hidden.pem":     publicPEM(t, key),
		"notes.txt":       publicPEM(t, key),
		"huge.pem":        strings.Repeat("x", maxDeviceKeyFile+1),
		"linked-to.other": publicPEM(t, key),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Join(dir, "linked-to.other"), filepath.Join(dir, "linked.pem")); err != nil {
		t.Fatal(err)
	}
	logs := &testkit.LogBuffer{}
	cfg := Config{Providers: []ProviderConfig{{Name: "fleet", Type: TypeDevices, Project: testProject, RegistryDir: dir,
		Devices: []DeviceConfig{{ID: "blocked", Blocked: true}}}}}
	h, err := New(Options{Config: cfg, Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Stop()
	token := key.SignWithoutKID(t, deviceClaims(time.Now()))
	tests := []struct {
		clientID string
		reason   Reason
	}{
		{clientID: "good"},
		{clientID: "linked"},
		{clientID: "blocked", reason: ReasonDeviceBlocked}, // the inline entry overrides the file
		{clientID: "private", reason: ReasonUnknownDevice},
		{clientID: "huge", reason: ReasonUnknownDevice},
		{clientID: "bad$name", reason: ReasonUnknownDevice},
		{clientID: ".hidden", reason: ReasonUnknownDevice},
		{clientID: "notes", reason: ReasonUnknownDevice},
	}
	for _, tt := range tests {
		t.Run(tt.clientID, func(t *testing.T) {
			if _, err := h.verify(token, "", tt.clientID); ReasonOf(err) != tt.reason || (tt.reason == "" && err != nil) {
				t.Fatalf("err = %v, want %q", err, tt.reason)
			}
		})
	}
	for _, want := range []string{"private.pem", "huge.pem", "bad$name.pem"} {
		if !strings.Contains(logs.String(), want) {
			t.Fatalf("no warning names %s:\n%s", want, logs)
		}
	}
	if st := h.Providers(); len(st) != 1 || st[0].Type != TypeDevices || !st[0].Ready || st[0].Keys != 2 {
		t.Fatalf("status = %+v, want 2 keys (good, linked)", st)
	}
}

func TestDeviceRegistryStartErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		p    ProviderConfig
		want string
	}{
		{name: "registry_dir missing", p: ProviderConfig{RegistryDir: filepath.Join(dir, "nope")},
			want: "authhook: auth.providers[0].registry_dir: stat " + filepath.Join(dir, "nope") + ": no such file or directory"},
		{name: "key file missing", p: ProviderConfig{Devices: []DeviceConfig{{ID: "d", Keys: []DeviceKey{{File: "keys/d.pem"}}}}},
			want: "authhook: auth.providers[0].devices[0].keys[0].file: open " + filepath.Join(dir, "keys/d.pem") + ": no such file or directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.p.Name, tt.p.Type, tt.p.Project = "fleet", TypeDevices, testProject
			_, err := New(Options{Config: Config{Providers: []ProviderConfig{tt.p}}, BaseDir: dir, Logger: slog.New(slog.DiscardHandler)})
			if err == nil || err.Error() != tt.want {
				t.Fatalf("err = %v\nwant %s", err, tt.want)
			}
		})
	}
}

// A key file named relative to BaseDir (the config file's directory) is read from there.
func TestDeviceKeyFileRelativeToBaseDir(t *testing.T) {
	dir := t.TempDir()
	key := testkit.NewKey(t, "RS256", "")
	if err := os.MkdirAll(filepath.Join(dir, "keys"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "keys", "d.pem"), []byte(selfSignedPEM(t, key, time.Now().Add(time.Hour))), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := devicesConfig(DeviceConfig{ID: "d", Keys: []DeviceKey{{File: "keys/d.pem", Expires: time.Now().Add(-time.Minute)}}})
	h, err := New(Options{Config: cfg, BaseDir: dir, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Stop()
	// The configured expiry is earlier than the certificate's and wins.
	if _, err := h.verify(key.SignWithoutKID(t, deviceClaims(time.Now())), "", "d"); ReasonOf(err) != ReasonKeyExpired {
		t.Fatalf("err = %v, want key_expired", err)
	}
}

// BenchmarkRegistrySweep is the background cost of registry_dir: a full rescan (a stat per file, no file
// read) of 10,000 unchanged device files, which the poller does every registrySweepEvery polls, and a poll
// of an unchanged directory (one stat), which it does every registryPollInterval.
func BenchmarkRegistrySweep(b *testing.B) {
	dir := b.TempDir()
	key := testkit.NewKey(b, "ES256", "")
	for i := range 10_000 {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("dev-%d.pem", i)), []byte(publicPEM(b, key)), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	// Make every mtime old enough not to be racy, so nothing is read again.
	old := time.Now().Add(-time.Minute)
	for i := range 10_000 {
		if err := os.Chtimes(filepath.Join(dir, fmt.Sprintf("dev-%d.pem", i)), old, old); err != nil {
			b.Fatal(err)
		}
	}
	if err := os.Chtimes(dir, old, old); err != nil {
		b.Fatal(err)
	}
	r, err := newDeviceRegistry("fleet", &devicesSettings{Project: testProject, RegistryDir: dir}, "providers[0]", "", slog.New(slog.DiscardHandler), time.Now)
	if err != nil {
		b.Fatal(err)
	}
	before := r.set.Load()
	b.Run("full-rescan/files=10000", func(b *testing.B) {
		for b.Loop() {
			r.scan(false)
		}
	})
	b.Run("poll-unchanged", func(b *testing.B) {
		for b.Loop() {
			r.polls = 1 // never a sweep
			r.poll()
		}
	})
	if r.set.Load() != before {
		b.Fatal("an unchanged directory published a new device set")
	}
}

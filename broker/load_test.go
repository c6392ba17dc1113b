package broker

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/idmq/idmq/aclhook"
	"github.com/idmq/idmq/authhook"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestBadConfigGolden pins the exact message of each config error class: field path and line included.
func TestBadConfigGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/bad/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no test configs: %v", err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		t.Run(name, func(t *testing.T) {
			_, err := LoadFile(f)
			if err == nil {
				t.Fatal("config loaded, want an error")
			}
			got := err.Error() + "\n"
			golden := strings.TrimSuffix(f, ".yaml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create)", err)
			}
			if got != string(want) {
				t.Errorf("error message changed:\ngot:  %s\nwant: %s", got, want)
			}
		})
	}
}

func TestConfigErrorsNameFieldAndLine(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       []string
	}{
		{"unknown key suggests", "listeners:\n  - {type: tcp, adress: \":1\"}\n", []string{"line 2", "listeners[0].adress", `did you mean "address"`}},
		{"bad duration", "mqtt:\n  connect_timeout: soon\n", []string{"line 2", "mqtt.connect_timeout", "invalid duration"}},
		{"duplicate address", "listeners:\n  - {type: tcp, address: \":1883\"}\n  - {type: tcp, address: \":1883\"}\n", []string{"line 3", "listeners[1].address", "already used by listeners[0].address"}},
		{"unset env", "data_dir: ${IDMQ_TEST_NEVER_SET}\n", []string{"line 1", "data_dir", "IDMQ_TEST_NEVER_SET is not set"}},
		{"missing cert", "listeners:\n  - {type: wss, address: \":1\", cert_file: nope.pem, key_file: nope.key}\n", []string{"line 2", "listeners[0].cert_file", "no such file"}},
		{"negative slow subscriber wait", "mqtt:\n  slow_subscriber_wait: -1s\n", []string{"line 2", "mqtt.slow_subscriber_wait", "between 0"}},
		{"http cert without key", "listeners: [{type: tcp, address: \":1\"}]\nhttp: {address: \":2\", cert_file: x.pem}\n", []string{"http.key_file", "required when cert_file is set"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml+"auth: {allow_anonymous: true}\n"), t.TempDir())
			if err == nil {
				t.Fatal("want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// TestSectionErrorsAreOneType: an embedder tells a config error of any section apart with one errors.As, and
// finds the absolute path and line on it.
func TestSectionErrorsAreOneType(t *testing.T) {
	yaml := "listeners: [{type: tcp, address: \":1\"}]\nauth:\n  providers:\n    - {name: a, type: oidc, issuer: http://idp.example.com}\nacl:\n  rules:\n    - {topic: x}\n"
	_, err := Parse([]byte(yaml), t.TempDir())
	if err == nil {
		t.Fatal("want an error")
	}
	var got []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var fe *authhook.FieldError // the same type as aclhook.FieldError and broker.FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("%v is not a FieldError", e)
		}
		got = append(got, fmt.Sprintf("%d %s", fe.Line, fe.Path))
	}
	if want := []string{"4 auth.providers[0].issuer", "7 acl.rules[0].access"}; !slices.Equal(got, want) {
		t.Fatalf("errors at %q, want %q", got, want)
	}
	var acl *aclhook.FieldError
	if !errors.As(err, &acl) || !errors.Is(err, aclhook.ErrUnknownAccess) {
		t.Fatalf("the acl error lost its type or sentinel: %v", err)
	}
}

func TestEnvExpansion(t *testing.T) {
	t.Setenv("IDMQ_TEST_ADDR", "127.0.0.1:1999")
	t.Setenv("IDMQ_TEST_MAX", "42")
	t.Setenv("IDMQ_TEST_SECRET", "p4ss: #not a comment")
	cfg, err := Parse([]byte(`
listeners: [{type: tcp, address: "${IDMQ_TEST_ADDR}"}]
mqtt:
  max_clients: ${IDMQ_TEST_MAX}
storage: {type: redis, address: "127.0.0.1:6379", password: "${IDMQ_TEST_SECRET}"}
auth: {allow_anonymous: true}
`), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listeners[0].Address != "127.0.0.1:1999" || cfg.MQTT.MaxClients != 42 || cfg.Storage.Password != "p4ss: #not a comment" {
		t.Fatalf("not expanded: %+v %+v %+v", cfg.Listeners[0], cfg.MQTT, cfg.Storage)
	}
}

func TestDefaultsApply(t *testing.T) {
	cfg, err := Parse([]byte("listeners: [{type: tcp, address: \":1\"}]\nauth: {allow_anonymous: true}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MQTT.MaxSessionExpiry != 24*time.Hour || cfg.MQTT.MaxPacketSize != 262144 || cfg.Storage.Type != StorageBolt ||
		cfg.MQTT.SlowSubscriberWait != time.Second {
		t.Fatalf("defaults not applied: %+v", cfg.MQTT)
	}
}

func TestEmbeddedDefaultsAndExampleLoad(t *testing.T) {
	if _, err := LoadDefault(); err != nil {
		t.Fatalf("embedded defaults: %v", err)
	}
	if _, err := LoadFile("../config.example.yaml"); err != nil {
		t.Fatalf("config.example.yaml: %v", err)
	}
}

package broker

import (
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

// FuzzParseConfig: whatever the file says, loading it returns a config or an error; never a panic, and an
// error always names where it is.
func FuzzParseConfig(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/bad/*.yaml")
	seeds = append(seeds, "../config.example.yaml", "default.yaml")
	for _, s := range seeds {
		if b, err := os.ReadFile(s); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("listeners: [{type: tcp, address: \":1\"}]\nauth: {allow_anonymous: true}\nacl: {rules: [{topic: \"a/%{x}/#\", access: pubsub, when: {x: [a, b]}}]}\n"))
	f.Add([]byte("&a [*a]"))
	f.Add([]byte("listeners: *x"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data, dir)
		if err != nil {
			if strings.TrimSpace(err.Error()) == "" {
				t.Fatal("an error with no message")
			}
			return
		}
		if len(cfg.Listeners) == 0 || cfg.MQTT.MaxInflight < 1 {
			t.Fatalf("accepted an invalid config: %+v", cfg)
		}
	})
}

// FuzzExchangeBody: any request body gets a JSON answer with a stable error code (or credentials for a
// valid token); never a panic or a 500.
func FuzzExchangeBody(f *testing.F) {
	idp := newTestIdP(f)
	b, h := newTestBroker(&testing.T{}, idp, "  rate_limit: {per_second: 1000000, burst: 1000000}")
	defer func() { _ = b.auth.Stop() }()
	good := idp.token(f, jwt.MapClaims{"org_id": "o1"})
	for _, s := range []string{`{"token": "` + good + `"}`, `{"token": "` + good + `", "provider": "corp"}`, `{}`, `{"token": 5}`,
		`{"token": "a.b.c"}`, `{"token": "eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0."}`, `[]`, `null`, ``, `{"token": "x", "extra": 1}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("POST", "/v2/tokens/exchange", strings.NewReader(body)))
		var out map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatalf("status %d with a non-JSON body %q", rec.Code, rec.Body.String())
		}
		switch rec.Code {
		case 200:
			if out["mqtt_password"] == "" {
				t.Fatal("200 without credentials")
			}
		case 400, 401, 404:
			if code, _ := out["error"].(string); code == "" || out["message"] == "" {
				t.Fatalf("error without code or message: %v", out)
			}
		default:
			t.Fatalf("status %d for body %q: %v", rec.Code, body, out)
		}
	})
}

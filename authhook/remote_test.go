package authhook

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/idmq/idmq/internal/testkit"
)

func newHookFor(t *testing.T, cfg Config, client *http.Client, now func() time.Time) *Hook {
	t.Helper()
	h, err := New(Options{Config: cfg, HTTPClient: client, Now: now, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Stop() })
	return h
}

func TestCheckReportsExactErrors(t *testing.T) {
	key := testkit.NewKey(t, "ES256", "ec-1")
	good := testkit.NewIdP(t, key)
	mux := http.NewServeMux()
	var srvURL string
	mux.HandleFunc("/status/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "nope", http.StatusForbidden)
	})
	mux.HandleFunc("/badjson/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"issuer": `))
	})
	mux.HandleFunc("/elsewhere/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]string{"issuer": srvURL + "/elsewhere", "jwks_uri": good.JWKSURL()})
	})
	mux.HandleFunc("/huge/jwks", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"keys":[` + strings.Repeat(" ", 1<<20) + `]}`))
	})
	mux.HandleFunc("/nokeys/jwks", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`))
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	srvURL = srv.URL
	tlsSrv := httptest.NewTLSServer(mux)
	defer tlsSrv.Close()

	tests := []struct {
		name   string
		p      ProviderConfig
		client *http.Client
		want   string // substring of LastError; "" = ok
	}{
		{name: "ok via discovery", p: ProviderConfig{Issuer: good.Issuer()}},
		{name: "HTTP status", p: ProviderConfig{Issuer: srv.URL + "/status"}, want: "HTTP status 403"},
		{name: "bad JSON", p: ProviderConfig{Issuer: srv.URL + "/badjson"}, want: "bad JSON"},
		{name: "jwks_uri on another host", p: ProviderConfig{Issuer: srv.URL + "/elsewhere"}, want: "is not on the issuer's host"},
		{name: "jwks_url on another host, configured explicitly", p: ProviderConfig{Issuer: srv.URL + "/elsewhere", JWKSURL: good.JWKSURL()}},
		{name: "JWKS over 1 MiB", p: ProviderConfig{Issuer: srv.URL + "/x", JWKSURL: srv.URL + "/huge/jwks"}, want: "response larger than 1048576 bytes"},
		{name: "only symmetric keys", p: ProviderConfig{Issuer: srv.URL + "/x", JWKSURL: srv.URL + "/nokeys/jwks"}, want: "no usable signing keys"},
		{name: "TLS", p: ProviderConfig{Issuer: "https://idp.example.com", JWKSURL: tlsSrv.URL + "/nokeys/jwks"}, want: "TLS failed"},
		{name: "DNS", p: ProviderConfig{Issuer: "https://idp.example.com"}, client: &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return nil, &net.DNSError{Err: "no such host", Name: "idp.example.com", IsNotFound: true}
			}}}, want: "DNS lookup failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.p.Name, tt.p.Type = "p", TypeOIDC
			h := newHookFor(t, Config{Providers: []ProviderConfig{tt.p}}, tt.client, nil)
			st := h.Check(context.Background())
			if len(st) != 1 {
				t.Fatalf("statuses = %+v", st)
			}
			if tt.want == "" {
				if st[0].LastError != "" || !st[0].Ready || st[0].Keys != 1 {
					t.Fatalf("status = %+v", st[0])
				}
				return
			}
			if !strings.Contains(st[0].LastError, tt.want) || st[0].Ready {
				t.Fatalf("LastError = %q, want it to contain %q (ready %v)", st[0].LastError, tt.want, st[0].Ready)
			}
		})
	}
}

// A key removed from the JWKS invalidates tokens it signed at the next refresh, cached or not.
func TestRemovedKeyInvalidatesCachedTokens(t *testing.T) {
	clock := newFakeClock()
	keep := testkit.NewKey(t, "RS256", "keep")
	drop := testkit.NewKey(t, "ES256", "drop")
	idp := testkit.NewIdP(t, keep, drop)
	h := newHookFor(t, oidcConfig(idp.Issuer()), nil, clock.Now)
	waitReady(t, h)
	claims := baseClaims(idp.Issuer())(clock.Now())
	dropped, kept := drop.Sign(t, claims), keep.Sign(t, claims)
	for _, tok := range []string{dropped, kept} {
		if _, err := h.Verify(context.Background(), tok, ""); err != nil {
			t.Fatal(err)
		}
	}
	if n := h.ps().cache.len(); n != 2 {
		t.Fatalf("cache holds %d tokens, want 2", n)
	}
	idp.SetKeys(keep)
	h.Check(context.Background()) // the next refresh
	if _, err := h.Verify(context.Background(), kept, ""); err != nil {
		t.Fatalf("token of a kept key: %v", err)
	}
	if _, err := h.Verify(context.Background(), dropped, ""); ReasonOf(err) != ReasonUnknownKID {
		t.Fatalf("token of a removed key: %v, want unknown_kid", err)
	}
}

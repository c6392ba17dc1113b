package broker

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/idmq/idmq/authhook"
)

// maxRequestBody caps every HTTP request body; no endpoint takes more.
const maxRequestBody = 64 << 10

// httpServer is the API next to the MQTT listeners: health, metrics, JWKS and (later) token exchange.
type httpServer struct {
	srv     *http.Server
	ln      net.Listener
	certs   *certReloader
	log     *slog.Logger
	handler atomic.Pointer[http.Handler] // joining a cluster: health only; then every route
	serving bool
}

// newHTTPServer binds http.address (nil without one) and serves handler once serve is called.
func (b *Broker) newHTTPServer(handler http.Handler) (*httpServer, error) {
	addr := b.cfg.HTTP.Address
	if addr == "" {
		return nil, nil
	}
	hs := &httpServer{log: b.log}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, errors.New("http.address " + addr + ": " + err.Error())
	}
	if b.cfg.HTTP.CertFile != "" {
		if hs.certs, err = newCertReloader(b.cfg.Resolve(b.cfg.HTTP.CertFile), b.cfg.Resolve(b.cfg.HTTP.KeyFile)); err != nil {
			ln.Close()
			return nil, err
		}
		ln = tls.NewListener(ln, hs.certs.tlsConfig())
	}
	hs.ln = ln
	hs.setHandler(handler)
	hs.srv = &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*hs.handler.Load()).ServeHTTP(w, r) }),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          slog.NewLogLogger(b.log.Handler(), slog.LevelDebug),
	}
	return hs, nil
}

func healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// joiningRoutes answer while New waits for the node's cluster (a quorum of nodes, possibly minutes): the
// process is alive, not ready; every other endpoint is 503 until Start completes.
func (b *Broker) joiningRoutes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", healthz)
	mux.HandleFunc("GET /readyz", b.handleReady)
	mux.Handle("GET /metrics", promhttp.HandlerFor(b.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusServiceUnavailable, "starting", "this node is starting: it is joining its cluster")
	})
	return limitBody(mux)
}

func (b *Broker) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", healthz)
	mux.HandleFunc("GET /readyz", b.handleReady)
	mux.Handle("GET /metrics", promhttp.HandlerFor(b.registry, promhttp.HandlerOpts{}))
	exchange := b.cors(b.exchange)
	mux.Handle("POST /v2/tokens/exchange", exchange)
	mux.Handle("OPTIONS /v2/tokens/exchange", exchange)
	b.mountAdmin(mux)
	mux.Handle("POST "+publishPath, b.publish)
	// The local provider may come and go with a reload: the handlers look it up per request.
	local := func(handler func(*authhook.LocalIssuer) http.Handler) http.Handler {
		return b.cors(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if li := b.auth.LocalIssuer(); li != nil {
				handler(li).ServeHTTP(w, r)
				return
			}
			http.NotFound(w, r)
		}))
	}
	mux.Handle("GET /.well-known/jwks.json", local((*authhook.LocalIssuer).JWKSHandler))
	mux.Handle("GET /.well-known/openid-configuration", local((*authhook.LocalIssuer).DiscoveryHandler))
	return limitBody(mux)
}

type readiness struct {
	Status    string `json:"status"` // ready | degraded | not_ready
	Listeners bool   `json:"listeners"`
	Store     bool   `json:"store"`
	Providers []any  `json:"providers"`
	Cluster   *bool  `json:"cluster,omitempty"` // clustered: this node is part of a working cluster
}

// handleReady answers 503 until listeners and store are up. A provider whose keys were never fetched
// makes the broker "degraded" (200): other providers' clients still connect, so it stays in rotation.
func (b *Broker) handleReady(w http.ResponseWriter, _ *http.Request) {
	r := readiness{Status: "ready", Listeners: b.ready.Load(), Store: b.storeOK.Load(), Providers: []any{}}
	for _, p := range b.auth.Providers() {
		if !p.Ready {
			r.Status = "degraded"
		}
		r.Providers = append(r.Providers, p)
	}
	if b.cfg.clustered() {
		joined := b.joined.Load() && b.cluster.c.Ready() // joined: b.cluster is set
		r.Cluster = &joined
	}
	code := http.StatusOK
	if !r.Listeners || !r.Store || (r.Cluster != nil && !*r.Cluster) {
		r.Status, code = "not_ready", http.StatusServiceUnavailable
	}
	writeJSON(w, code, r)
}

// cors allows exactly the configured origins; anything else gets no CORS headers, so the browser blocks it.
func (b *Broker) cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		allowed := b.live.Load().cors
		origin := r.Header.Get("Origin")
		if origin != "" && allowed[origin] {
			h := w.Header()
			h.Set("Access-Control-Allow-Origin", origin)
			h.Add("Vary", "Origin")
			h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
			h.Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
			h.Set("Access-Control-Max-Age", "600")
		}
		if r.Method == http.MethodOptions {
			if origin == "" || !allowed[origin] {
				writeError(w, http.StatusForbidden, "origin_not_allowed", "origin is not in http.cors_origins")
				return
			}
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// limitBody caps request bodies at maxRequestBody, but for publishPath, which sets its own limit from
// mqtt.max_packet_size.
func limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != publishPath {
			r.Body = http.MaxBytesReader(w, r.Body, maxRequestBody)
		}
		next.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError is the one shape of every API error: a stable machine code and a human message.
func writeError(w http.ResponseWriter, status int, code, message string) {
	writeJSON(w, status, map[string]string{"error": code, "message": message})
}

func (hs *httpServer) setHandler(h http.Handler) { hs.handler.Store(&h) }

// serve starts serving, once; nil-safe.
func (hs *httpServer) serve() {
	if hs == nil || hs.serving {
		return
	}
	hs.serving = true
	go func() {
		if err := hs.srv.Serve(hs.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			hs.log.Error("http server stopped", "error", err)
		}
	}()
}

func (hs *httpServer) close(ctx context.Context) {
	if hs == nil {
		return
	}
	if err := hs.srv.Shutdown(ctx); err != nil {
		_ = hs.srv.Close()
	}
}

func (hs *httpServer) address() string { return hs.ln.Addr().String() }

func (hs *httpServer) protocol() string {
	if hs.certs != nil {
		return "https"
	}
	return "http"
}

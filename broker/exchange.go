package broker

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/idmq/idmq/authhook"
)

// exchangeRequest is the body of POST /v2/tokens/exchange.
type exchangeRequest struct {
	Token    string `json:"token"`
	Provider string `json:"provider,omitempty"`
}

// exchangeResponse carries MQTT credentials signed by idmq's own key.
type exchangeResponse struct {
	Username  string `json:"mqtt_username"`
	Password  string `json:"mqtt_password"`
	ClientID  string `json:"client_id"`
	ExpiresAt string `json:"expires_at"`
	ExpiresIn int64  `json:"expires_in"`
	Provider  string `json:"provider"`
}

// exchangeHandler swaps an identity provider's token for short-lived MQTT credentials.
type exchangeHandler struct {
	b     *Broker
	limit *ipLimiter
	total *prometheus.CounterVec
}

func (b *Broker) newExchangeHandler() *exchangeHandler {
	h := &exchangeHandler{
		b:     b,
		limit: newIPLimiter(b.cfg.HTTP.RateLimit.PerSecond, b.cfg.HTTP.RateLimit.Burst),
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "idmq_exchange_total", Help: "Token exchange requests, by provider and result (ok or the error code).",
		}, []string{"provider", "result"}),
	}
	b.registry.MustRegister(h.total)
	return h
}

func (h *exchangeHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	provider, code, status, msg := h.exchange(w, r)
	if code != "" {
		if provider == "" {
			provider = "unknown"
		}
		h.total.WithLabelValues(provider, code).Inc()
		h.b.log.Info("token exchange refused", "error", code, "provider", provider, "remote", r.RemoteAddr, "reason", msg)
		writeError(w, status, code, msg)
	}
}

// exchange writes the success response itself; on failure it returns the stable error code, status and message.
func (h *exchangeHandler) exchange(w http.ResponseWriter, r *http.Request) (provider, code string, status int, msg string) {
	if ok, wait := h.limit.allow(remoteIP(r)); !ok {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
		return "", "rate_limited", http.StatusTooManyRequests, "too many exchange requests from this address; retry later"
	}
	presented, hasBearer := bearer(r)
	live := h.b.live.Load()
	if !live.apiKeys.empty() {
		if !hasBearer || !live.apiKeys.match(presented) {
			return "", "unauthorized", http.StatusUnauthorized, "a valid API key is required: Authorization: Bearer <key>"
		}
	}

	req, err := decodeExchangeRequest(r.Body)
	if err != nil && !(errors.Is(err, io.EOF) && hasBearer && live.apiKeys.empty()) {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return "", "invalid_request", http.StatusBadRequest, fmt.Sprintf("body is larger than %d bytes", maxRequestBody)
		}
		return "", "invalid_request", http.StatusBadRequest, "body must be JSON: {\"token\": \"<IdP JWT>\", \"provider\": \"<name>\"}: " + err.Error()
	}
	if req.Token == "" && hasBearer && live.apiKeys.empty() {
		req.Token = presented // without API keys, the IdP token may come as the bearer token
	}
	if req.Token == "" {
		return req.Provider, "invalid_request", http.StatusBadRequest, "token is required"
	}

	id, err := h.b.auth.Verify(r.Context(), req.Token, req.Provider)
	if err != nil {
		code, status := exchangeError(err)
		p := req.Provider
		var ae *authhook.Error
		if errors.As(err, &ae) && ae.Provider != "" {
			p = ae.Provider
		}
		return p, code, status, strings.TrimPrefix(err.Error(), "authhook: ")
	}

	if h.b.isLocalProvider(id.Provider) {
		// idmq's own credentials are MQTT credentials already; exchanging them again would let a stolen
		// one be renewed forever.
		return id.Provider, "invalid_request", http.StatusBadRequest, "idmq credentials cannot be exchanged; exchange the identity provider's token"
	}
	li := h.b.auth.LocalIssuer()
	if li == nil {
		return id.Provider, "exchange_unavailable", http.StatusServiceUnavailable, "token exchange needs a provider of type local (idmq's own issuer)"
	}
	ttl := live.cfg.Auth.Exchange.TTL
	password, expiresAt, err := li.MintCredential(id, ttl)
	if err != nil {
		h.b.log.Error("token exchange: minting failed", "provider", id.Provider, "error", err)
		return id.Provider, "internal_error", http.StatusInternalServerError, "could not mint MQTT credentials"
	}
	now := time.Now()
	writeJSON(w, http.StatusOK, exchangeResponse{
		Username:  id.Username,
		Password:  password,
		ClientID:  id.Username + "-" + randomSuffix(),
		ExpiresAt: expiresAt.UTC().Format(time.RFC3339),
		ExpiresIn: int64(expiresAt.Sub(now).Round(time.Second) / time.Second),
		Provider:  id.Provider,
	})
	h.total.WithLabelValues(id.Provider, "ok").Inc()
	h.b.log.Debug("token exchanged", "provider", id.Provider, "username", id.Username, "remote", r.RemoteAddr, "expires_at", expiresAt)
	return id.Provider, "", http.StatusOK, ""
}

// exchangeError maps a verification failure to the endpoint's stable error code and HTTP status.
func exchangeError(err error) (string, int) {
	switch authhook.ReasonOf(err) {
	case authhook.ReasonProviderNotFound:
		return "provider_not_found", http.StatusNotFound
	case authhook.ReasonIssuerMismatch:
		return "issuer_mismatch", http.StatusUnauthorized
	case authhook.ReasonTokenExpired:
		return "token_expired", http.StatusUnauthorized
	case authhook.ReasonTokenRevoked:
		return "token_revoked", http.StatusUnauthorized
	case authhook.ReasonTokenNotYetValid:
		return "token_not_yet_valid", http.StatusUnauthorized
	case authhook.ReasonInvalidSignature, authhook.ReasonUnknownKID, authhook.ReasonAlgNotAllowed:
		return "invalid_signature", http.StatusUnauthorized
	case authhook.ReasonInvalidAudience, authhook.ReasonInvalidAZP:
		return "invalid_audience", http.StatusUnauthorized
	case authhook.ReasonMissingClaim:
		return "missing_claim", http.StatusUnauthorized
	case authhook.ReasonMalformed, authhook.ReasonTokenTooLarge:
		return "invalid_request", http.StatusBadRequest
	case authhook.ReasonKeysUnavailable:
		return "provider_unavailable", http.StatusServiceUnavailable
	default:
		return "invalid_token", http.StatusUnauthorized
	}
}

func (b *Broker) isLocalProvider(name string) bool {
	for _, p := range b.live.Load().cfg.Auth.Providers {
		if p.Name == name && p.Type == authhook.TypeLocal {
			return true
		}
	}
	return false
}

// randomSuffix makes suggested client ids unique across tabs and devices of one user.
func randomSuffix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

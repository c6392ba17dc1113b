package broker

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/idmq/idmq/authhook"
)

// adminAPI is /v1: connected clients, disconnects and revocations, for operators holding an admin key.
type adminAPI struct {
	b *Broker
}

func (b *Broker) mountAdmin(mux *http.ServeMux) {
	a := &adminAPI{b: b}
	mux.Handle("GET /v1/clients", a.guard(a.listClients))
	mux.Handle("DELETE /v1/clients/{id}", a.guard(a.disconnectClient))
	mux.Handle("GET /v1/revocations", a.guard(a.listRevocations))
	mux.Handle("POST /v1/revocations", a.guard(a.revoke))
	mux.Handle("POST /v1/explain", a.guard(a.explain))
	mux.Handle("POST /v1/reload", a.guard(a.reload))
	mux.Handle("POST /v1/providers/{name}/refresh", a.guard(a.refreshProvider))
	mux.Handle("GET /v1/cluster", a.guard(a.handleCluster))
}

// guard answers 404 while http.admin_keys is empty (no keys, no admin API: it never answers
// unauthenticated), 401 without credentials and 403 with a wrong key. The keys are those in force: a reload
// may add or remove them.
func (a *adminAPI) guard(next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		keys := a.b.live.Load().adminKeys
		if keys.empty() {
			http.NotFound(w, r)
			return
		}
		key, ok := bearer(r)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="idmq admin"`)
			writeError(w, http.StatusUnauthorized, "unauthorized", "an admin key is required: Authorization: Bearer <key>")
			return
		}
		if !keys.match(key) {
			a.b.log.Warn("admin API: wrong key", "remote", r.RemoteAddr, "path", r.URL.Path)
			writeError(w, http.StatusForbidden, "forbidden", "the admin key is not valid")
			return
		}
		next(w, r)
	})
}

type clientInfo struct {
	ClientID    string     `json:"client_id"`
	Username    string     `json:"username"`
	Provider    string     `json:"provider,omitempty"`
	Remote      string     `json:"remote"`
	Listener    string     `json:"listener"`
	Protocol    byte       `json:"protocol_version"`
	ConnectedAt *time.Time `json:"connected_at,omitempty"`
	ExpiresAt   *time.Time `json:"expires_at,omitempty"`
	Node        string     `json:"node,omitempty"` // clustered: the node the client is connected to
}

func (a *adminAPI) listClients(w http.ResponseWriter, r *http.Request) {
	if a.b.cluster != nil {
		a.listClusterClients(w, r)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"clients": a.b.localClients()})
}

// localClients are the clients connected to this node, by client id.
func (b *Broker) localClients() []clientInfo {
	out := []clientInfo{}
	for _, cl := range b.server.Clients.GetAll() {
		if cl.Net.Inline || cl.Closed() {
			continue
		}
		ci := clientInfo{ClientID: cl.ID, Username: string(cl.Properties.Username), Remote: cl.Net.Remote,
			Listener: cl.Net.Listener, Protocol: cl.Properties.ProtocolVersion}
		if id, ok := b.auth.Identity(cl); ok {
			ci.Provider = id.Provider
			if !id.ExpiresAt.IsZero() {
				exp := id.ExpiresAt.UTC()
				ci.ExpiresAt = &exp
			}
			if !id.ConnectedAt.IsZero() {
				at := id.ConnectedAt.UTC()
				ci.ConnectedAt = &at
			}
		}
		out = append(out, ci)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ClientID < out[j].ClientID })
	return out
}

func (a *adminAPI) disconnectClient(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if a.b.cluster != nil {
		a.disconnectClusterClient(w, r, id)
		return
	}
	if !a.b.disconnectLocal(id) {
		writeError(w, http.StatusNotFound, "client_not_found", "no connected client has that id")
		return
	}
	a.b.log.Info("admin API: client disconnected", "client", id, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, map[string]any{"disconnected": id})
}

// disconnectLocal ends the connection of client id on this node (0x98 Administrative action); false if no
// such client is connected here.
func (b *Broker) disconnectLocal(id string) bool {
	cl, ok := b.server.Clients.Get(id)
	if !ok || cl.Closed() || cl.Net.Inline {
		return false
	}
	// An error: already being disconnected, mochi has not dropped it from its client list yet.
	return b.auth.Disconnect(cl, packets.ErrAdministrativeAction, "disconnected by an administrator") == nil
}

func (a *adminAPI) listRevocations(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"revocations": a.b.auth.Revocations()})
}

type revocationRequest struct {
	Username string `json:"username,omitempty"`
	JTI      string `json:"jti,omitempty"`
}

func (a *adminAPI) revoke(w http.ResponseWriter, r *http.Request) {
	var req revocationRequest
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || (req.Username == "") == (req.JTI == "") {
		writeError(w, http.StatusBadRequest, "invalid_request", `body must be {"username": "..."} or {"jti": "..."}, exactly one`)
		return
	}
	n, err := a.b.auth.Revoke(authhook.Revocation{Username: req.Username, TokenID: req.JTI})
	if err != nil {
		// The revocation is in force and matching clients are gone, but a restart would forget it.
		a.b.log.Error("admin API: revocation applied but not saved", "error", err, "disconnected", n)
		writeError(w, http.StatusInternalServerError, "revocation_not_saved",
			fmt.Sprintf("revocation applied (%d clients disconnected) but not saved to disk: it will not survive a restart", n))
		return
	}
	if a.b.cluster != nil {
		if err := a.b.shareRevocation(r.Context(), req.Username, req.JTI); err != nil {
			a.b.log.Error("admin API: revocation applied here but not shared with the cluster", "error", err, "disconnected", n)
			writeError(w, http.StatusInternalServerError, "revocation_not_shared",
				fmt.Sprintf("revocation applied here (%d clients disconnected) but not stored in the cluster: other nodes do not know it", n))
			return
		}
	}
	a.b.log.Info("admin API: credentials revoked", "username", req.Username, "jti", req.JTI, "disconnected", n, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, map[string]any{"revoked": req, "disconnected": n})
}

package broker

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"

	"github.com/idmq/idmq/cluster"
)

// The admin API of a cluster node speaks for the whole cluster: GET /v1/clients asks every live node for its
// clients, DELETE /v1/clients/{id} asks the node that holds the client to end it. Nodes answer each other
// over NATS request/reply (cluster.HandleRequests), each within cluster.AdminTimeout.
const (
	requestClients    = "clients"
	requestDisconnect = "disconnect"
)

type disconnectAnswer struct {
	Disconnected bool `json:"disconnected"`
}

// serveAdminRequests answers the other nodes' admin requests until the cluster node closes.
func (b *Broker) serveAdminRequests() error {
	c := b.cluster.c
	stopList, err := c.HandleRequests(requestClients, func([]byte) []byte {
		v, _ := json.Marshal(b.localClients())
		return v
	})
	if err != nil {
		return err
	}
	stopDisconnect, err := c.HandleRequests(requestDisconnect, func(id []byte) []byte {
		ok := b.disconnectLocal(string(id))
		if ok {
			b.log.Info("admin API: client disconnected at another node's request", "client", string(id))
		}
		v, _ := json.Marshal(disconnectAnswer{Disconnected: ok})
		return v
	})
	if err != nil {
		stopList()
		return err
	}
	b.cluster.stopAdmin = func() { stopList(); stopDisconnect() }
	return nil
}

type clusterClients struct {
	Clients []clientInfo `json:"clients"`
	// Partial: a live node did not answer in time; its clients are missing from the list.
	Partial    bool     `json:"partial"`
	Unanswered []string `json:"unanswered_nodes,omitempty"`
}

// listClusterClients is GET /v1/clients on a cluster node: the clients of every live node, each with its node.
func (a *adminAPI) listClusterClients(w http.ResponseWriter, r *http.Request) {
	answers, unanswered := a.b.cluster.c.AskAll(r.Context(), requestClients, nil)
	out := clusterClients{Clients: []clientInfo{}, Partial: len(unanswered) > 0, Unanswered: unanswered}
	for node, answer := range answers {
		var cs []clientInfo
		if err := json.Unmarshal(answer, &cs); err != nil {
			a.b.log.Warn("admin API: unreadable client list", "node", node, "error", err)
			out.Partial, out.Unanswered = true, append(out.Unanswered, node)
			continue
		}
		for _, ci := range cs {
			ci.Node = node
			out.Clients = append(out.Clients, ci)
		}
	}
	sort.Slice(out.Clients, func(i, j int) bool {
		ci, cj := out.Clients[i], out.Clients[j]
		return ci.ClientID < cj.ClientID || ci.ClientID == cj.ClientID && ci.Node < cj.Node
	})
	sort.Strings(out.Unanswered)
	writeJSON(w, http.StatusOK, out)
}

// disconnectClusterClient is DELETE /v1/clients/{id} on a cluster node: the node holding the client ends it.
func (a *adminAPI) disconnectClusterClient(w http.ResponseWriter, r *http.Request, id string) {
	c := a.b.cluster.c
	owner, err := c.OwnerOf(r.Context(), id)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "cluster_unavailable", err.Error())
		return
	}
	if owner == "" || owner == c.Node() {
		if !a.b.disconnectLocal(id) {
			writeError(w, http.StatusNotFound, "client_not_found", "no connected client has that id")
			return
		}
		a.b.log.Info("admin API: client disconnected", "client", id, "remote", r.RemoteAddr)
		writeJSON(w, http.StatusOK, map[string]any{"disconnected": id, "node": c.Node()})
		return
	}
	answer, err := c.Ask(r.Context(), owner, requestDisconnect, []byte(id))
	var d disconnectAnswer
	switch {
	case errors.Is(err, cluster.ErrNoAnswer):
		writeError(w, http.StatusGatewayTimeout, "node_unreachable",
			fmt.Sprintf("node %s holds the client but did not answer", owner))
		return
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, "cluster_unavailable", err.Error())
		return
	case json.Unmarshal(answer, &d) != nil || !d.Disconnected:
		writeError(w, http.StatusNotFound, "client_not_found", "no connected client has that id")
		return
	}
	a.b.log.Info("admin API: client disconnected", "client", id, "node", owner, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, map[string]any{"disconnected": id, "node": owner})
}

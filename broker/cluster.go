package broker

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/idmq/idmq/authhook"
	"github.com/idmq/idmq/cluster"
)

// prepareCluster applies the cluster section's defaults and validates it. Paths are relative to the config
// file like every other path. The warnings are what `idmq check` and the start log show.
func (c *Config) prepareCluster() (warnings []string, err error) {
	cc := c.Cluster
	if cc == nil {
		return nil, nil
	}
	if cc.NATS.StoreDir != "" {
		cc.NATS.StoreDir = c.Resolve(cc.NATS.StoreDir)
	}
	if cc.NATS.CredentialsFile != "" {
		cc.NATS.CredentialsFile = c.Resolve(cc.NATS.CredentialsFile)
	}
	cc.SetDefaults(c.Resolve(c.DataDir))
	var errs []error
	if verr := cc.Validate(); verr != nil {
		errs = append(errs, verr)
	}
	// An offline persistent session is a cursor into the stream: messages older than retention are gone.
	if cc.Retention > 0 && cc.Retention < c.MQTT.MaxSessionExpiry {
		errs = append(errs, fieldErr("retention", "%s is shorter than mqtt.max_session_expiry (%s): an offline session would lose messages it is promised",
			cc.Retention, c.MQTT.MaxSessionExpiry))
	}
	return c.signingKeyWarnings(), errors.Join(errs...)
}

// signingKeyWarnings: credentials exchanged on one node are signed with auth.signing_key_file and verified on
// every other node, so all nodes must hold the same key. A key generated in data_dir is this node's alone.
func (c *Config) signingKeyWarnings() []string {
	key := c.Auth.SigningKeyFile
	if key == "" {
		return []string{"cluster is set but auth.signing_key_file is not: each node generates its own key in data_dir, " +
			"so credentials exchanged on one node are refused by the others; give every node the same key file"}
	}
	dataDir, _ := filepath.Abs(c.Resolve(c.DataDir))
	abs, _ := filepath.Abs(key)
	if rel, err := filepath.Rel(dataDir, abs); err == nil && !strings.HasPrefix(rel, "..") {
		return []string{"cluster is set and auth.signing_key_file is inside data_dir (node-local): every node must " +
			"hold the same key, copy it to all nodes"}
	}
	return nil
}

// clustered reports whether this broker is a node of a cluster.
func (c *Config) clustered() bool { return c.Cluster != nil }

// clusterNode is this broker's membership in a cluster and the two hooks that wire it into mochi.
type clusterNode struct {
	c               *cluster.Cluster
	route           *cluster.Hook
	ready           *cluster.ReadyHook
	stopRevocations func() // nil until followRevocations
	stopAdmin       func() // nil until serveAdminRequests
}

// joinCluster starts (or connects to) NATS and waits until this node is part of the cluster, up to the
// cluster's start timeout: New returns only a joined node. hooks are the authentication and ACL hooks.
func (b *Broker) joinCluster(hooks []mqtt.Hook) error {
	var readyHook atomic.Pointer[cluster.ReadyHook] // built once Start returned; readiness changes before are moot
	c, err := cluster.Start(context.Background(), *b.cfg.Cluster, cluster.Options{
		Logger: b.log,
		OnReadyChange: func(ready bool) {
			b.log.Warn("cluster: readiness changed", "ready", ready)
			if h := readyHook.Load(); h != nil {
				h.Changed(ready)
			}
		},
	})
	if err != nil {
		return err
	}
	n := &clusterNode{c: c, route: cluster.NewHook(c, b.server, cluster.HookOptions{
		Identity: func(cl *mqtt.Client) string {
			s, _ := b.aclSubject(cl)
			return s.Username
		},
		Registerer:  b.registry,
		ReadAllowed: readAllowed(hooks),
	}),
		ready: cluster.NewReadyHook(b.server, c.Ready, 0, b.registry)}
	readyHook.Store(n.ready)
	b.cluster = n
	// A routed message must fit in one NATS message.
	caps := b.server.Options.Capabilities
	if mp := uint32(c.MaxPayload()); caps.MaximumPacketSize == 0 || caps.MaximumPacketSize > mp {
		caps.MaximumPacketSize = mp
	}
	b.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "idmq_cluster_nodes_up",
		Help: "Nodes of the cluster with a live presence key, as this node sees them."}, n.nodesUp))
	b.log.Info("cluster: joined", "node", c.Node(), "replicas", c.Replicas())
	return nil
}

// readAllowed is the ACL's verdict on a client reading a topic, as mochi asks it (hooks OR-ed), for messages
// the cluster delivers outside mochi's routing (a resumed session's queue).
func readAllowed(hooks []mqtt.Hook) func(*mqtt.Client, string, bool) bool {
	return func(cl *mqtt.Client, topic string, write bool) bool {
		for _, h := range hooks {
			if h.Provides(mqtt.OnACLCheck) && h.OnACLCheck(cl, topic, write) {
				return true
			}
		}
		return false
	}
}

// hooks places the cluster's hooks: readiness right after the connect rate limit (before any signature work),
// routing after the ACL (a refused publish is never routed).
func (n *clusterNode) hooks(h []mqtt.Hook) []mqtt.Hook {
	out := append([]mqtt.Hook{h[0], n.ready}, h[1:]...)
	return append(out, n.route)
}

func (n *clusterNode) nodesUp() float64 {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	m, err := n.c.Nodes(ctx)
	if err != nil {
		return 0
	}
	return float64(len(m.Nodes))
}

// close leaves the cluster; the mochi server is already closed.
func (n *clusterNode) close() error {
	_ = n.ready.Stop()
	_ = n.route.Stop()
	if n.stopRevocations != nil {
		n.stopRevocations()
	}
	if n.stopAdmin != nil {
		n.stopAdmin()
	}
	return n.c.Close()
}

type clusterStatus struct {
	Node  string `json:"node"`
	Ready bool   `json:"ready"`
	Error string `json:"error,omitempty"`
	cluster.Membership
}

// handleCluster is GET /v1/cluster: this node, its readiness, the live nodes and the JetStream leaders.
func (a *adminAPI) handleCluster(w http.ResponseWriter, r *http.Request) {
	n := a.b.cluster
	if n == nil {
		writeError(w, http.StatusNotFound, "not_clustered", "this broker has no cluster section")
		return
	}
	st := clusterStatus{Node: n.c.Node(), Ready: n.c.Ready()}
	m, err := n.c.Nodes(r.Context())
	st.Membership = m
	if err != nil {
		st.Error = err.Error()
	}
	if st.Nodes == nil {
		st.Nodes = []cluster.NodeInfo{}
	}
	code := http.StatusOK
	if !st.Ready {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, st)
}

// followRevocations applies every node's revocations here: those stored before this node started (so they
// survive restarts of every node) and each new one within a moment. A revocation this node already holds with
// the same or a later time is skipped, so a node's own revocation is not applied twice.
func (b *Broker) followRevocations() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stop, err := b.cluster.c.WatchRevocations(ctx, func(v []byte) {
		var r authhook.Revocation
		if json.Unmarshal(v, &r) != nil {
			return
		}
		for _, have := range b.auth.Revocations() {
			if have.Username == r.Username && have.TokenID == r.TokenID && !have.RevokedAt.Before(r.RevokedAt) {
				return
			}
		}
		n, err := b.auth.Revoke(r)
		if err != nil {
			b.log.Error("cluster: revocation applied but not saved", "error", err)
		}
		b.log.Info("cluster: credentials revoked on another node", "username", r.Username, "jti", r.TokenID, "disconnected", n)
	})
	if err != nil {
		return err
	}
	b.cluster.stopRevocations = stop
	return nil
}

// shareRevocation stores a revocation just made here for the other nodes.
func (b *Broker) shareRevocation(ctx context.Context, username, jti string) error {
	for _, r := range b.auth.Revocations() {
		if r.Username == username && r.TokenID == jti {
			v, _ := json.Marshal(r)
			name := "u/" + username
			if jti != "" {
				name = "j/" + jti
			}
			return b.cluster.c.PutRevocation(ctx, name, v)
		}
	}
	return errors.New("the revocation is not in force here")
}

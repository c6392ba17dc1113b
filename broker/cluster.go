package broker

import (
	"errors"
	"path/filepath"
	"strings"
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

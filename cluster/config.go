package cluster

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/idmq/idmq/internal/fielderr"
)

// Config is the `cluster:` section of the broker's configuration. Its absence means one node without NATS.
type Config struct {
	// Node names this node; unique in the cluster. It is the embedded nats-server's name, the presence key and
	// the origin stamped on every message. Default: the hostname.
	Node string     `yaml:"node"`
	NATS NATSConfig `yaml:"nats"`
	// Replicas is the JetStream replication of the message stream and every bucket. 0 means automatic, see
	// SetDefaults.
	Replicas int `yaml:"replicas"`
	// Retention is how long routed messages stay in the stream for offline persistent sessions. The broker
	// checks it against mqtt.max_session_expiry.
	Retention time.Duration `yaml:"retention"`
}

// NATSConfig chooses between an embedded nats-server (listen/routes) and an external NATS cluster (url).
type NATSConfig struct {
	Listen          string   `yaml:"listen"`           // embedded: route (cluster) address, host:port
	Routes          []string `yaml:"routes"`           // embedded: the other nodes' route URLs
	ClientListen    string   `yaml:"client_listen"`    // embedded: optional client port, host:port
	URL             string   `yaml:"url"`              // external: nats:// or tls:// URL(s), comma-separated
	CredentialsFile string   `yaml:"credentials_file"` // external only: a NATS .creds file
	StoreDir        string   `yaml:"store_dir"`        // embedded: JetStream data; default data_dir/jetstream
}

const (
	// DefaultRetention matches the example and mochi's usual session expiry ceiling.
	DefaultRetention = 24 * time.Hour
	// MaxReplicas is JetStream's own ceiling.
	MaxReplicas = 5
	// defaultMaxReplicas: three copies survive the loss of any one node; more only slow every publish down.
	defaultMaxReplicas = 3
	maxNodeNameLen     = 128
)

// External reports whether the node connects to an external NATS cluster instead of embedding a server.
func (c *Config) External() bool { return c.NATS.URL != "" }

// SetDefaults fills what the operator left out. dataDir is the broker's data_dir (already resolved).
//
// Replicas 0 (automatic) becomes:
//   - embedded: min(3, len(nats.routes)+1), so 1 for a node without routes, 2 for a two-node cluster and 3 for
//     three nodes or more (routes name the other nodes; listing this node too only overestimates, and the cap
//     keeps it at 3);
//   - external: left at 0 here and decided at Start from the server: 3 when it is part of a NATS cluster,
//     1 when it is a single server (a standalone server refuses replicas > 1).
func (c *Config) SetDefaults(dataDir string) {
	if c.Node == "" {
		if h, err := os.Hostname(); err == nil {
			c.Node = h
		}
	}
	if c.Retention == 0 {
		c.Retention = DefaultRetention
	}
	if c.External() {
		return
	}
	if c.NATS.StoreDir == "" && dataDir != "" {
		c.NATS.StoreDir = filepath.Join(dataDir, "jetstream")
	}
	if c.Replicas == 0 {
		c.Replicas = min(defaultMaxReplicas, len(c.NATS.Routes)+1)
	}
}

// FieldError is a configuration error in one field: the one type of internal/fielderr. Path is relative to the
// cluster section ("nats.routes[1]"); the broker prefixes "cluster." and adds the line.
type FieldError = fielderr.FieldError

func fieldErr(path, format string, args ...any) error { return fielderr.New(path, format, args...) }

// Validate checks the section after SetDefaults. err is nil, a *FieldError, or errors.Join of several.
func (c *Config) Validate() error {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	add(validateNodeName(c.Node))
	if c.External() {
		errs = append(errs, c.validateExternal()...)
	} else {
		errs = append(errs, c.validateEmbedded()...)
	}
	if c.Replicas < 0 || c.Replicas > MaxReplicas || (c.Replicas == 0 && !c.External()) {
		add(fieldErr("replicas", "%d is out of range: JetStream keeps 1 to %d copies", c.Replicas, MaxReplicas))
	}
	if c.Retention <= 0 {
		add(fieldErr("retention", "must be positive (how long messages wait for offline sessions), got %s", c.Retention))
	}
	return errors.Join(errs...)
}

func validateNodeName(n string) error {
	if n == "" {
		return fieldErr("node", "must not be empty (the hostname is unknown: name this node)")
	}
	if len(n) > maxNodeNameLen {
		return fieldErr("node", "%d bytes is longer than %d", len(n), maxNodeNameLen)
	}
	// The name is a NATS server name and a presence key token: keep to what both accept everywhere.
	for _, r := range n {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return fieldErr("node", "%q: only letters, digits, '-' and '_' are allowed", n)
		}
	}
	return nil
}

func (c *Config) validateExternal() []error {
	var errs []error
	only := "is for the embedded NATS server; it cannot be combined with nats.url (an external NATS cluster)"
	if c.NATS.Listen != "" {
		errs = append(errs, fieldErr("nats.listen", "%s", only))
	}
	if len(c.NATS.Routes) > 0 {
		errs = append(errs, fieldErr("nats.routes", "%s", only))
	}
	if c.NATS.ClientListen != "" {
		errs = append(errs, fieldErr("nats.client_listen", "%s", only))
	}
	if c.NATS.StoreDir != "" {
		errs = append(errs, fieldErr("nats.store_dir", "%s", only))
	}
	for u := range strings.SplitSeq(c.NATS.URL, ",") {
		if err := checkURL(strings.TrimSpace(u), "nats", "tls", "ws", "wss"); err != nil {
			errs = append(errs, fieldErr("nats.url", "%v", err))
		}
	}
	if c.NATS.CredentialsFile != "" {
		if _, err := os.Stat(c.NATS.CredentialsFile); err != nil {
			errs = append(errs, fieldErr("nats.credentials_file", "%v", err))
		}
	}
	return errs
}

func (c *Config) validateEmbedded() []error {
	var errs []error
	if c.NATS.CredentialsFile != "" {
		errs = append(errs, fieldErr("nats.credentials_file", "only with nats.url (an external NATS cluster)"))
	}
	if c.NATS.Listen != "" {
		if err := checkHostPort(c.NATS.Listen); err != nil {
			errs = append(errs, fieldErr("nats.listen", "%v", err))
		} else if len(c.NATS.Routes) == 0 {
			// nats-server refuses a clustered JetStream without routes, and says so only in its own log.
			errs = append(errs, fieldErr("nats.routes", "required with nats.listen: list the other nodes' route addresses (a one-node cluster sets neither)"))
		}
	} else if len(c.NATS.Routes) > 0 {
		errs = append(errs, fieldErr("nats.listen", "required with nats.routes: the other nodes connect to it"))
	}
	for i, r := range c.NATS.Routes {
		if err := checkURL(r, "nats", "nats-route"); err != nil {
			errs = append(errs, fieldErr(fmt.Sprintf("nats.routes[%d]", i), "%v", err))
		}
	}
	if c.NATS.ClientListen != "" {
		if err := checkHostPort(c.NATS.ClientListen); err != nil {
			errs = append(errs, fieldErr("nats.client_listen", "%v", err))
		}
	}
	if c.NATS.StoreDir == "" {
		errs = append(errs, fieldErr("nats.store_dir", "must not be empty (JetStream keeps its data there)"))
	}
	if peers := len(c.NATS.Routes) + 1; c.Replicas > peers && c.Replicas <= MaxReplicas {
		errs = append(errs, fieldErr("replicas", "%d copies need %d nodes, but nats.routes names %d other node(s)",
			c.Replicas, c.Replicas, peers-1))
	}
	return errs
}

func checkHostPort(hp string) error {
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %w", hp, err)
	}
	if strings.ContainsAny(host, " /") {
		return fmt.Errorf("%q: invalid host", hp)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("%q: port must be 0 to 65535", hp)
	}
	return nil
}

func checkURL(raw string, schemes ...string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("not a URL") // the text may hold a password: never echo it
	}
	shown := u.Redacted()
	ok := false
	for _, s := range schemes {
		ok = ok || u.Scheme == s
	}
	if !ok {
		return fmt.Errorf("%q: scheme must be one of %s://", shown, strings.Join(schemes, "://, "))
	}
	if u.Port() == "" || u.Hostname() == "" {
		return fmt.Errorf("%q: host and port are required", shown)
	}
	if err := checkHostPort(u.Host); err != nil {
		return fmt.Errorf("%q: %w", shown, err)
	}
	return nil
}

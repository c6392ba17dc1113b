// Package broker assembles idmq: configuration, the mochi server with idmq's hooks, listeners, the HTTP API
// and the process lifecycle. The auth and ACL logic lives in the public authhook and aclhook packages.
package broker

import (
	_ "embed"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/idmq/idmq/aclhook"
	"github.com/idmq/idmq/authhook"
	"github.com/idmq/idmq/cluster"
	"github.com/idmq/idmq/events"
	"github.com/idmq/idmq/internal/fielderr"
)

// DefaultConfigYAML is what `idmq serve` runs on when no config file is given or found.
//
//go:embed default.yaml
var DefaultConfigYAML []byte

// Config is the whole idmq YAML file.
type Config struct {
	DataDir   string           `yaml:"data_dir"`
	Log       LogConfig        `yaml:"log"`
	Listeners []ListenerConfig `yaml:"listeners"`
	HTTP      HTTPConfig       `yaml:"http"`
	Storage   StorageConfig    `yaml:"storage"`
	MQTT      MQTTConfig       `yaml:"mqtt"`
	Auth      authhook.Config  `yaml:"auth"`
	ACL       aclhook.Config   `yaml:"acl"`
	// Cluster, when present, makes this node one of several on NATS JetStream (cluster.go); nil: one node.
	Cluster *cluster.Config `yaml:"cluster"`
	Events  events.Config   `yaml:"events"` // event webhooks (events.go)

	// dir is the directory of the config file; relative paths in the file are resolved against it.
	dir      string
	file     string // the file LoadFile read; "" for the embedded defaults and Parse
	warnings []string
}

// File is the path the config was loaded from ("" when it was not loaded from a file): what a reload reads.
func (c *Config) File() string { return c.file }

// Warnings are problems that do not stop idmq from starting (e.g. an ACL condition on an unmapped attribute).
func (c *Config) Warnings() []string { return c.warnings }

// LogConfig selects the log/slog handler.
type LogConfig struct {
	Level  string `yaml:"level"`  // debug | info | warn | error
	Format string `yaml:"format"` // text | json
}

// Listener types.
const (
	ListenerTCP = "tcp"
	ListenerTLS = "tls"
	ListenerWS  = "ws"
	ListenerWSS = "wss"
)

// ListenerConfig is one MQTT listener.
type ListenerConfig struct {
	Type     string `yaml:"type"`
	Address  string `yaml:"address"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	Path     string `yaml:"path"` // websocket only: URL path that upgrades (default "/mqtt"; "/" accepts any path)
}

// HTTPConfig is the HTTP API server (exchange, JWKS, health, metrics).
type HTTPConfig struct {
	Address     string   `yaml:"address"`
	CertFile    string   `yaml:"cert_file"`
	KeyFile     string   `yaml:"key_file"`
	CORSOrigins []string `yaml:"cors_origins"`
	// APIKeys, when set, are required (Authorization: Bearer) to call the token exchange: a backend
	// exchanges on behalf of its users and the IdP token goes in the body.
	APIKeys []string `yaml:"api_keys"`
	// AdminKeys guard /v1 (clients, disconnects, revocations). Without any, the admin API is off.
	AdminKeys []string        `yaml:"admin_keys"`
	RateLimit RateLimitConfig `yaml:"rate_limit"` // token exchange requests per remote IP

	// POST /v1/publish (publishconfig.go).
	PublishConfig `yaml:",inline"`
}

// RateLimitConfig is a token bucket: PerSecond tokens refill a bucket of Burst.
type RateLimitConfig struct {
	PerSecond float64 `yaml:"per_second"`
	Burst     int     `yaml:"burst"`
}

// Storage types.
const (
	StorageBolt   = "bolt"
	StorageMemory = "memory"
	StorageRedis  = "redis"
)

// StorageConfig selects where sessions, retained and inflight messages persist.
type StorageConfig struct {
	Type     string `yaml:"type"`
	Path     string `yaml:"path"`     // bolt: file path (default data_dir/idmq.db)
	Address  string `yaml:"address"`  // redis
	Password string `yaml:"password"` // redis
	DB       int    `yaml:"db"`       // redis
}

// MQTTConfig holds the protocol limits a self-hoster must be able to set.
type MQTTConfig struct {
	MaxClients       int64         `yaml:"max_clients"` // 0 = unlimited
	MaxPacketSize    uint32        `yaml:"max_packet_size"`
	MaxSessionExpiry time.Duration `yaml:"max_session_expiry"`
	MaxInflight      int           `yaml:"max_inflight"`
	// SlowSubscriberWait is how long a QoS 1/2 publish may be held for a subscriber whose in-flight window
	// is 3/4 full before that subscriber is treated as slow (and its overflow dropped); 0 never holds.
	SlowSubscriberWait time.Duration `yaml:"slow_subscriber_wait"`
	ConnectTimeout     time.Duration `yaml:"connect_timeout"` // a connection that sends no CONNECT in time is closed
	// MaxConnectRate bounds CONNECTs per remote IP, checked before any token is verified.
	MaxConnectRate RateLimitConfig `yaml:"max_connect_rate"`
	// Per-connection memory. OutboundQueue is how many packets may wait for a client's writer before
	// further messages to it are dropped, whatever their QoS (mochi allocates the whole queue per client).
	OutboundQueue   int `yaml:"outbound_queue"`
	ReadBufferSize  int `yaml:"read_buffer_size"`  // bytes; the reader grows past it for larger packets
	WriteBufferSize int `yaml:"write_buffer_size"` // bytes buffered before a flush to the socket
	// SkipAuthMethodEcho leaves the Authentication Method out of a successful CONNACK, against MQTT 5
	// [MQTT-4.12.0-5], for clients that crash on it (paho.golang without an AuthHandler; mochifix/authmethod.go).
	SkipAuthMethodEcho bool `yaml:"skip_auth_method_echo"`
}

func defaultConfig() Config {
	return Config{
		DataDir: "./data",
		Log:     LogConfig{Level: "info", Format: "text"},
		HTTP:    HTTPConfig{Address: ":8080", RateLimit: RateLimitConfig{PerSecond: 5, Burst: 20}, PublishConfig: defaultPublishConfig()},
		Storage: StorageConfig{Type: StorageBolt},
		MQTT: MQTTConfig{
			MaxPacketSize:    262144,
			MaxSessionExpiry: 24 * time.Hour,
			MaxInflight:      1024,
			// Long enough for a subscriber's GC pause or a scheduling gap on a busy machine, short enough
			// that a stalled subscriber costs its publishers one noticeable hiccup, once.
			SlowSubscriberWait: time.Second,
			ConnectTimeout:     10 * time.Second,
			MaxConnectRate:     RateLimitConfig{PerSecond: 100, Burst: 1000},
			// Chosen by measurement (BENCHMARKS.md; bench/compare.sh, bench/scale.sh) over mochi's 8192/2048/2048.
			// mochi allocates the whole queue per client (8 bytes a slot: 8192 slots are 64 KiB of heap per
			// connection, 2048 are 16 KiB) and drops whatever does not fit, QoS 1 included. 1024 slots lost a
			// third of a 2,000-message QoS 0 burst to one subscriber and 0.8x of its throughput; 2048 holds
			// such a burst next to a full inflight window (MaxInflight). Re-measured with the same fan-in (50
			// publishers x 2,000 messages, 5 interleaved rounds): 1024 slots lost 92k of 500k QoS 0 messages,
			// 512 lost 228k, 256 lost 334k and 1,010 QoS 1 messages; 2048 lost none. The queue's pages stay
			// untouched until used, so its size hardly shows in RSS (about 2.5 KB a connection between 2048
			// and 256 slots); goroutine stacks dominate that (see BENCHMARKS.md).
			// The read buffer is allocated per connection; larger packets are read past it. The write buffer
			// exists only while a client has writes queued, so it costs idle connections nothing.
			OutboundQueue:   2048,
			ReadBufferSize:  1024,
			WriteBufferSize: 2048,
		},
	}
}

// Resolve turns a path from the config file into one relative to the working directory.
func (c *Config) Resolve(p string) string {
	if p == "" || filepath.IsAbs(p) || c.dir == "" {
		return p
	}
	return filepath.Join(c.dir, p)
}

// BoltPath is where the bolt store lives.
func (c *Config) BoltPath() string {
	if c.Storage.Path != "" {
		return c.Resolve(c.Storage.Path)
	}
	return filepath.Join(c.Resolve(c.DataDir), "idmq.db")
}

// FieldError is a configuration error about one field; once Parse has located it, Path is dotted from the
// file's root and Line is set. It is the same type as authhook.FieldError and aclhook.FieldError.
type FieldError = fielderr.FieldError

func fieldErr(path string, format string, args ...any) error {
	return fielderr.New(path, format, args...)
}

// validate checks the broker's own sections; auth and acl validate themselves.
func (c *Config) validate() error {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	if strings.TrimSpace(c.DataDir) == "" {
		add(fieldErr("data_dir", "must not be empty"))
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		add(fieldErr("log.level", "%q is not one of debug, info, warn, error", c.Log.Level))
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		add(fieldErr("log.format", "%q is not one of text, json", c.Log.Format))
	}

	var bound []boundAddress
	claim := func(path, addr string) {
		ba, err := parseBindAddress(addr)
		if err != nil {
			add(fieldErr(path, "%v", err))
			return
		}
		for _, other := range bound {
			if other.conflicts(ba) {
				add(fieldErr(path, "address %q is already used by %s", addr, other.path))
				return
			}
		}
		ba.path = path
		bound = append(bound, ba)
	}
	if len(c.Listeners) == 0 {
		add(fieldErr("listeners", "at least one listener is required"))
	}
	for i, l := range c.Listeners {
		p := fmt.Sprintf("listeners[%d]", i)
		switch l.Type {
		case ListenerTCP, ListenerWS:
			if l.CertFile != "" || l.KeyFile != "" {
				add(fieldErr(p+".cert_file", "a %s listener takes no certificate (use type %s)", l.Type, secureTypeOf(l.Type)))
			}
		case ListenerTLS, ListenerWSS:
			add(c.checkKeyPair(p, l.CertFile, l.KeyFile, true))
		default:
			add(fieldErr(p+".type", "%q is not one of tcp, tls, ws, wss", l.Type))
		}
		if l.Path != "" && l.Type != ListenerWS && l.Type != ListenerWSS {
			add(fieldErr(p+".path", "only websocket listeners take a path"))
		} else if l.Path != "" && !strings.HasPrefix(l.Path, "/") {
			add(fieldErr(p+".path", "must start with /"))
		}
		claim(p+".address", l.Address)
	}
	if c.HTTP.Address != "" {
		claim("http.address", c.HTTP.Address)
	}
	errs = append(errs, c.validateHTTP()...)

	switch c.Storage.Type {
	case StorageBolt, StorageMemory:
		if c.Storage.Address != "" {
			add(fieldErr("storage.address", "only the redis store takes an address"))
		}
	case StorageRedis:
		if c.Storage.Address == "" {
			add(fieldErr("storage.address", "required for the redis store"))
		}
	default:
		add(fieldErr("storage.type", "%q is not one of bolt, memory, redis", c.Storage.Type))
	}

	errs = append(errs, c.MQTT.validate()...)
	return errors.Join(errs...)
}

// validateHTTP checks the http section but its address, which validate checks against the listeners'.
func (c *Config) validateHTTP() []error {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	add(c.checkKeyPair("http", c.HTTP.CertFile, c.HTTP.KeyFile, false))
	for i, o := range c.HTTP.CORSOrigins {
		add(checkOrigin(fmt.Sprintf("http.cors_origins[%d]", i), o))
	}
	add(checkKeys("http.api_keys", c.HTTP.APIKeys))
	add(checkKeys("http.admin_keys", c.HTTP.AdminKeys))
	if c.HTTP.RateLimit.PerSecond <= 0 || c.HTTP.RateLimit.Burst < 1 {
		add(fieldErr("http.rate_limit", "per_second must be > 0 and burst >= 1"))
	}
	return append(errs, c.HTTP.PublishConfig.validate(c.HTTP.AdminKeys)...)
}

// validate checks the mqtt section's limits.
func (m *MQTTConfig) validate() []error {
	var errs []error
	add := func(err error) { errs = append(errs, err) }
	if m.MaxClients < 0 {
		add(fieldErr("mqtt.max_clients", "must be 0 (unlimited) or positive"))
	}
	if m.MaxPacketSize < 1024 || m.MaxPacketSize > 268435455 {
		add(fieldErr("mqtt.max_packet_size", "must be between 1024 and 268435455 bytes"))
	}
	if m.MaxSessionExpiry < 0 || m.MaxSessionExpiry > time.Duration(1<<32-1)*time.Second {
		add(fieldErr("mqtt.max_session_expiry", "must be between 0 and 4294967295s"))
	}
	if m.MaxInflight < 1 || m.MaxInflight > 65535 {
		add(fieldErr("mqtt.max_inflight", "must be between 1 and 65535"))
	}
	if m.SlowSubscriberWait < 0 || m.SlowSubscriberWait > time.Minute {
		add(fieldErr("mqtt.slow_subscriber_wait", "must be between 0 (never hold a publisher) and 1m"))
	}
	if m.MaxConnectRate.PerSecond <= 0 || m.MaxConnectRate.Burst < 1 {
		add(fieldErr("mqtt.max_connect_rate", "per_second must be > 0 and burst >= 1"))
	}
	if m.OutboundQueue < 16 || m.OutboundQueue > 1<<20 {
		add(fieldErr("mqtt.outbound_queue", "must be between 16 and 1048576 packets"))
	}
	if m.ReadBufferSize < 256 || m.ReadBufferSize > 1<<20 {
		add(fieldErr("mqtt.read_buffer_size", "must be between 256 and 1048576 bytes"))
	}
	if m.WriteBufferSize < 256 || m.WriteBufferSize > 1<<20 {
		add(fieldErr("mqtt.write_buffer_size", "must be between 256 and 1048576 bytes"))
	}
	if m.ConnectTimeout < 100*time.Millisecond || m.ConnectTimeout > 5*time.Minute {
		add(fieldErr("mqtt.connect_timeout", "must be between 100ms and 5m"))
	}
	return errs
}

func secureTypeOf(t string) string {
	if t == ListenerWS {
		return ListenerWSS
	}
	return ListenerTLS
}

// checkKeyPair loads the pair now so a missing or mismatched file fails at load, not at the first handshake.
func (c *Config) checkKeyPair(path, certFile, keyFile string, required bool) error {
	if certFile == "" && keyFile == "" {
		if required {
			return fieldErr(path+".cert_file", "required for a TLS listener")
		}
		return nil
	}
	if certFile == "" {
		return fieldErr(path+".cert_file", "required when key_file is set")
	}
	if keyFile == "" {
		return fieldErr(path+".key_file", "required when cert_file is set")
	}
	if _, err := os.Stat(c.Resolve(certFile)); err != nil {
		return fieldErr(path+".cert_file", "%v", err)
	}
	if _, err := os.Stat(c.Resolve(keyFile)); err != nil {
		return fieldErr(path+".key_file", "%v", err)
	}
	if _, err := loadKeyPair(c.Resolve(certFile), c.Resolve(keyFile)); err != nil {
		return fieldErr(path+".cert_file", "%v", err)
	}
	return nil
}

// minKeyLength keeps API and admin keys out of guessing range (16 random characters or more).
const minKeyLength = 16

func checkKeys(path string, keys []string) error {
	seen := map[string]bool{}
	for i, k := range keys {
		switch {
		case len(k) < minKeyLength:
			return fieldErr(fmt.Sprintf("%s[%d]", path, i), "must be at least %d characters (use a random secret, e.g. from ${ENV})", minKeyLength)
		case seen[k]:
			return fieldErr(fmt.Sprintf("%s[%d]", path, i), "duplicate key")
		}
		seen[k] = true
	}
	return nil
}

func checkOrigin(path, origin string) error {
	if origin == "*" {
		return fieldErr(path, `"*" is not allowed: list exact origins (scheme://host[:port])`)
	}
	u, err := url.Parse(origin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fieldErr(path, "%q is not an origin (scheme://host[:port], no path)", origin)
	}
	return nil
}

type boundAddress struct {
	host string // "" = all interfaces
	port string
	path string
}

func parseBindAddress(addr string) (boundAddress, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return boundAddress{}, fmt.Errorf("%q is not host:port: %v", addr, err)
	}
	if port == "" {
		return boundAddress{}, fmt.Errorf("%q has no port", addr)
	}
	if host == "0.0.0.0" || host == "::" {
		host = ""
	}
	return boundAddress{host: host, port: port}, nil
}

// conflicts reports whether two bind addresses would collide; port 0 picks a free port and never collides.
func (a boundAddress) conflicts(b boundAddress) bool {
	if a.port != b.port || a.port == "0" {
		return false
	}
	return a.host == b.host || a.host == "" || b.host == ""
}

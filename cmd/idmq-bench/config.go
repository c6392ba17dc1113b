package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Scenario names accepted by --scenario.
const (
	scenarioConnect   = "connect"
	scenarioReconnect = "reconnect"
	scenarioFanin     = "fanin"
	scenarioFanout    = "fanout"
	scenarioIdle      = "idle"
)

var allScenarios = []string{scenarioConnect, scenarioReconnect, scenarioFanin, scenarioFanout, scenarioIdle}

// payloadHeaderSize is the part of every payload the receivers decode (timestamp, sequence, publisher, phase).
const payloadHeaderSize = 20

// config is everything the flags decide; parseConfig validates it so that a run never starts half-configured.
type config struct {
	Addr        string
	Transport   string // tcp, tls, ws, wss
	WSPath      string
	TLSCAFile   string
	TLSInsecure bool
	TLSServer   string
	Protocol    byte // 4 (3.1.1) or 5

	TokensFile       string
	UsersFile        string
	UsernameTemplate string
	AuthMethod       string // MQTT 5: send the token as Authentication Data with this method
	ClientIDPrefix   string

	Scenarios []string
	Label     string

	Clients         int // connect, reconnect
	ReconnectRounds int // reconnect: measured rounds after the warm-up
	ConnectWarmup   bool
	Concurrency     int
	Publishers      int // fanin
	Subscribers     int // fanout
	Messages        int // per fanin publisher
	FanoutMessages  int
	QoS             []byte
	Inflight        int
	ReceiveMaximum  int
	Rate            float64 // messages per second per publisher, 0 = unpaced
	PayloadSize     int
	FaninTopic      string
	FanoutTopic     string
	IdleClients     int
	IdleTopic       string
	IdleSettle      time.Duration
	BrokerPID       int
	PeerPIDs        []int  // other cluster nodes: their CPU counts as the broker's
	SubAddr         string // fanin: subscribers connect here (another cluster node); "" is Addr
	MetricsURL      string
	SourceIPs       int
	Keepalive       time.Duration
	ConnectTimeout  time.Duration
	Drain           time.Duration
	ScenarioTimeout time.Duration
	TotalTimeout    time.Duration
	MaxClients      int
}

// parseConfig reads the command line; errors name the flag.
func parseConfig(args []string, stderr io.Writer) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("idmq-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: idmq-bench [flags]\n\nDrives an MQTT broker on loopback and prints one JSON line per scenario on stdout.\nScenarios: %s\n\n", strings.Join(allScenarios, ", "))
		fs.PrintDefaults()
	}
	var protocol, scenarios, qos, peerPIDs string
	fs.StringVar(&c.Addr, "addr", "127.0.0.1:1883", "broker `host:port`; must be a loopback address")
	fs.StringVar(&c.Transport, "transport", "tcp", "tcp, tls, ws or wss")
	fs.StringVar(&c.WSPath, "ws-path", "/mqtt", "URL path for ws and wss")
	fs.StringVar(&c.TLSCAFile, "tls-ca", "", "PEM `file` of CA certificates that sign the broker's certificate (tls, wss)")
	fs.BoolVar(&c.TLSInsecure, "tls-insecure-skip-verify", false, "accept any broker certificate (tls, wss)")
	fs.StringVar(&c.TLSServer, "tls-server-name", "", "server name to verify (default: the host of --addr)")
	fs.StringVar(&protocol, "protocol", "5", "MQTT protocol: 3.1.1 (or 4) or 5")
	fs.StringVar(&c.TokensFile, "tokens", "", "`file` of tokens, one per line, sent as the password (or Authentication Data with --auth-method); a line \"user<TAB>token\" names the user")
	fs.StringVar(&c.UsersFile, "users", "", "`file` of \"user:password\" lines")
	fs.StringVar(&c.UsernameTemplate, "username-template", "bench-%d", "username of credential %d (its 0-based line index) when a token line names no user, and of every client without credentials")
	fs.StringVar(&c.AuthMethod, "auth-method", "", "MQTT 5 only: send each token as Authentication Data with this Authentication Method instead of the password")
	fs.StringVar(&c.ClientIDPrefix, "client-id-prefix", "", "client id prefix (default: \"b\" and a random run id, so ids are unique per run)")
	fs.StringVar(&scenarios, "scenario", "connect", "comma-separated scenarios to run in order: "+strings.Join(allScenarios, ","))
	fs.StringVar(&c.Label, "label", "", "broker label copied into every result")
	fs.IntVar(&c.Clients, "clients", 2000, "connect, reconnect: number of clients")
	fs.IntVar(&c.ReconnectRounds, "reconnect-rounds", 1, "reconnect: measured rounds of --clients reconnects after the warm-up; more rounds average out a noisy machine and the 10 ms CPU clock")
	fs.BoolVar(&c.ConnectWarmup, "connect-warmup", false, "connect: first connect and disconnect --clients clients with other credentials (--clients..2×--clients-1), unmeasured, so that the storm meets a broker past its start-up (heap grown, memory touched) and no cached token")
	fs.IntVar(&c.Concurrency, "concurrency", 64, "connections being opened at the same time")
	fs.IntVar(&c.Publishers, "publishers", 50, "fanin: publishers (and as many subscribers)")
	fs.IntVar(&c.Subscribers, "subscribers", 100, "fanout: subscribers")
	fs.IntVar(&c.Messages, "messages", 1000, "fanin: messages per publisher")
	fs.IntVar(&c.FanoutMessages, "fanout-messages", 100, "fanout: messages the publisher sends")
	fs.StringVar(&qos, "qos", "0,1", "fanin, fanout: comma-separated QoS levels to run (0, 1)")
	fs.IntVar(&c.Inflight, "inflight", 32, "QoS 1: unacknowledged publishes per publisher (capped by the broker's Receive Maximum)")
	fs.IntVar(&c.ReceiveMaximum, "receive-maximum", 0, "MQTT 5: Receive Maximum sent in CONNECT; 0 leaves it out (mochi v2.7.9 can deadlock under QoS 1 load when it is set)")
	fs.Float64Var(&c.Rate, "rate", 0, "messages per second per publisher; 0 sends as fast as the broker accepts")
	fs.IntVar(&c.PayloadSize, "payload-size", 64, fmt.Sprintf("payload bytes (at least %d)", payloadHeaderSize))
	fs.StringVar(&c.FaninTopic, "fanin-topic", "users/%u/bench/in/%i", "fanin topic template: %u username, %i publisher index, %r run id")
	fs.StringVar(&c.FanoutTopic, "fanout-topic", "users/%u/bench/out", "fanout topic template; with %u every client uses credential 0 so that one user's ACL admits them all")
	fs.IntVar(&c.IdleClients, "idle-clients", 10000, "idle: connections, each with one subscription")
	fs.StringVar(&c.IdleTopic, "idle-topic", "users/%u/bench/idle", "idle: topic template each client subscribes to; the final fan-out publishes once per distinct topic")
	fs.DurationVar(&c.IdleSettle, "idle-settle", 2*time.Second, "idle: wait after the last connection before reading the broker's memory")
	fs.IntVar(&c.BrokerPID, "broker-pid", 0, "idle: broker process id whose RSS is read from /proc/PID/status")
	fs.StringVar(&peerPIDs, "peer-pids", "", "comma-separated process ids of the other nodes of a clustered broker: their CPU time is added to --broker-pid's")
	fs.StringVar(&c.SubAddr, "sub-addr", "", "fanin: subscribers connect to this loopback `host:port` (another node of a cluster) while publishers use --addr; default --addr")
	fs.StringVar(&c.MetricsURL, "metrics-url", "", "idle: broker Prometheus endpoint (loopback) for go_goroutines and go_memstats_heap_inuse_bytes")
	fs.IntVar(&c.SourceIPs, "source-ips", 0, "spread connections over 127.0.0.2..127.0.0.(1+N); 0 picks one per 20,000 connections (none below that)")
	fs.DurationVar(&c.Keepalive, "keepalive", 60*time.Second, "MQTT keep alive (whole seconds); 0 disables PINGREQ")
	fs.DurationVar(&c.ConnectTimeout, "connect-timeout", 10*time.Second, "dial + CONNACK (and SUBACK) timeout per connection")
	fs.DurationVar(&c.Drain, "drain", 3*time.Second, "after publishing, wait this long without a new delivery before counting the rest as lost")
	fs.DurationVar(&c.ScenarioTimeout, "timeout", 60*time.Second, "wall-clock limit per scenario (each QoS of fanin/fanout counts as one)")
	fs.DurationVar(&c.TotalTimeout, "total-timeout", 10*time.Minute, "wall-clock limit for the whole run")
	fs.IntVar(&c.MaxClients, "max-clients", 100000, "refuse any scenario that would open more connections than this")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	var err error
	if c.Protocol, err = parseProtocol(protocol); err != nil {
		return nil, err
	}
	if c.Scenarios, err = parseScenarios(scenarios); err != nil {
		return nil, err
	}
	if c.QoS, err = parseQoS(qos); err != nil {
		return nil, err
	}
	if c.PeerPIDs, err = parsePIDs(peerPIDs); err != nil {
		return nil, err
	}
	return c, c.validate()
}

func parseProtocol(s string) (byte, error) {
	switch s {
	case "3.1.1", "4", "3":
		return 4, nil
	case "5", "5.0":
		return 5, nil
	}
	return 0, fmt.Errorf("--protocol: %q is not 3.1.1 or 5", s)
}

func parseScenarios(s string) ([]string, error) {
	var out []string
	for _, name := range strings.Split(s, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		known := false
		for _, k := range allScenarios {
			known = known || k == name
		}
		if !known {
			return nil, fmt.Errorf("--scenario: unknown scenario %q (known: %s)", name, strings.Join(allScenarios, ", "))
		}
		out = append(out, name)
	}
	if len(out) == 0 {
		return nil, errors.New("--scenario: no scenario given")
	}
	return out, nil
}

func parseQoS(s string) ([]byte, error) {
	var out []byte
	for _, f := range strings.Split(s, ",") {
		q, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || q < 0 || q > 1 {
			return nil, fmt.Errorf("--qos: %q is not 0 or 1", f)
		}
		out = append(out, byte(q))
	}
	return out, nil
}

func parsePIDs(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		pid, err := strconv.Atoi(f)
		if err != nil || pid <= 0 {
			return nil, fmt.Errorf("--peer-pids: %q is not a process id", f)
		}
		out = append(out, pid)
	}
	return out, nil
}

func (c *config) validate() error {
	switch c.Transport {
	case "tcp", "tls", "ws", "wss":
	default:
		return fmt.Errorf("--transport: %q is not tcp, tls, ws or wss", c.Transport)
	}
	if err := requireLoopbackHostPort(c.Addr); err != nil {
		return fmt.Errorf("--addr: %w", err)
	}
	if c.SubAddr != "" {
		if err := requireLoopbackHostPort(c.SubAddr); err != nil {
			return fmt.Errorf("--sub-addr: %w", err)
		}
	}
	if len(c.PeerPIDs) > 0 && c.BrokerPID <= 0 {
		return errors.New("--peer-pids: needs --broker-pid")
	}
	if c.MetricsURL != "" {
		u, err := url.Parse(c.MetricsURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
			return fmt.Errorf("--metrics-url: %q is not an http(s) URL", c.MetricsURL)
		}
		if err := requireLoopbackHost(u.Hostname()); err != nil {
			return fmt.Errorf("--metrics-url: %w", err)
		}
	}
	if c.TokensFile != "" && c.UsersFile != "" {
		return errors.New("--tokens and --users: give one credential source, not both")
	}
	if c.AuthMethod != "" && (c.Protocol != 5 || c.TokensFile == "") {
		return errors.New("--auth-method: needs --protocol 5 and --tokens")
	}
	if c.ClientIDPrefix != "" && strings.ContainsAny(c.ClientIDPrefix, "+#/") {
		return fmt.Errorf("--client-id-prefix: %q contains a wildcard or slash", c.ClientIDPrefix)
	}
	positive := []struct {
		name string
		v    int
	}{
		{"--clients", c.Clients}, {"--reconnect-rounds", c.ReconnectRounds}, {"--concurrency", c.Concurrency}, {"--publishers", c.Publishers},
		{"--subscribers", c.Subscribers}, {"--messages", c.Messages}, {"--fanout-messages", c.FanoutMessages},
		{"--inflight", c.Inflight}, {"--idle-clients", c.IdleClients}, {"--max-clients", c.MaxClients},
	}
	for _, p := range positive {
		if p.v <= 0 {
			return fmt.Errorf("%s: must be positive, got %d", p.name, p.v)
		}
	}
	if c.Inflight > 65535 {
		return fmt.Errorf("--inflight: at most 65535, got %d", c.Inflight)
	}
	if c.ReceiveMaximum < 0 || c.ReceiveMaximum > 65535 || (c.ReceiveMaximum > 0 && c.Protocol != 5) {
		return fmt.Errorf("--receive-maximum: must be 0..65535 and needs --protocol 5, got %d", c.ReceiveMaximum)
	}
	if c.PayloadSize < payloadHeaderSize || c.PayloadSize > 1<<20 {
		return fmt.Errorf("--payload-size: must be %d..%d, got %d", payloadHeaderSize, 1<<20, c.PayloadSize)
	}
	if c.Rate < 0 {
		return fmt.Errorf("--rate: must not be negative, got %g", c.Rate)
	}
	if c.SourceIPs < 0 || c.SourceIPs > 250 {
		return fmt.Errorf("--source-ips: must be 0..250, got %d", c.SourceIPs)
	}
	if c.Keepalive < 0 || c.Keepalive > 65535*time.Second || c.Keepalive%time.Second != 0 {
		return fmt.Errorf("--keepalive: must be whole seconds in 0..65535s, got %s", c.Keepalive)
	}
	durations := []struct {
		name string
		v    time.Duration
	}{
		{"--connect-timeout", c.ConnectTimeout}, {"--drain", c.Drain}, {"--timeout", c.ScenarioTimeout}, {"--total-timeout", c.TotalTimeout},
	}
	for _, d := range durations {
		if d.v <= 0 {
			return fmt.Errorf("%s: must be positive, got %s", d.name, d.v)
		}
	}
	for _, t := range []struct{ name, v string }{{"--fanin-topic", c.FaninTopic}, {"--fanout-topic", c.FanoutTopic}, {"--idle-topic", c.IdleTopic}} {
		if t.v == "" || strings.ContainsAny(t.v, "+#") {
			return fmt.Errorf("%s: %q must be a non-empty topic name without wildcards", t.name, t.v)
		}
	}
	for _, s := range c.Scenarios {
		if n := c.connectionsFor(s); n > c.MaxClients {
			return fmt.Errorf("--max-clients: scenario %s needs %d connections, more than %d", s, n, c.MaxClients)
		}
	}
	if c.SourceIPs > 0 {
		host, _, _ := net.SplitHostPort(c.Addr)
		if ip := net.ParseIP(host); ip == nil || ip.To4() == nil {
			return fmt.Errorf("--source-ips: needs --addr with a literal IPv4 loopback address, got %q", host)
		}
	}
	return nil
}

// connectionsFor is how many connections scenario s holds open at its peak.
func (c *config) connectionsFor(s string) int {
	switch s {
	case scenarioConnect, scenarioReconnect:
		return c.Clients
	case scenarioFanin:
		return 2 * c.Publishers
	case scenarioFanout:
		return c.Subscribers + 1
	case scenarioIdle:
		return c.IdleClients
	}
	return 0
}

// maxConnections is the peak over the chosen scenarios (they run one after another).
func (c *config) maxConnections() int {
	n := 0
	for _, s := range c.Scenarios {
		n = max(n, c.connectionsFor(s))
	}
	return n
}

// sourceIPCount resolves --source-ips 0 (auto): one address per 20,000 connections, none when one suffices,
// because each source address has about 28,000 ephemeral ports.
func (c *config) sourceIPCount() int {
	if c.SourceIPs > 0 {
		return c.SourceIPs
	}
	host, _, _ := net.SplitHostPort(c.Addr)
	if ip := net.ParseIP(host); ip == nil || ip.To4() == nil {
		return 0
	}
	n := (c.maxConnections() + 19999) / 20000
	if n <= 1 {
		return 0
	}
	return n
}

func (c *config) protocolName() string {
	if c.Protocol == 5 {
		return "5"
	}
	return "3.1.1"
}

// requireLoopbackHostPort refuses targets that are not this machine: the tool must never load someone else's broker.
func requireLoopbackHostPort(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %w", addr, err)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("%q has no numeric port", addr)
	}
	return requireLoopbackHost(host)
}

func requireLoopbackHost(host string) error {
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%q is not a loopback address (only 127.0.0.0/8, ::1 and localhost are allowed)", host)
	}
	return nil
}

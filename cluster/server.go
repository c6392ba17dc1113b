package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

const (
	// ClusterName is the NATS cluster name of every embedded server: routes refuse servers of another name.
	ClusterName = "idmq"
	// embeddedMaxPayload lifts NATS' 1 MiB default so ordinary MQTT payloads fit; larger MQTT packets must be
	// refused by the broker (see Cluster.MaxPayload).
	embeddedMaxPayload = 8 << 20
)

// startEmbedded starts this node's nats-server and waits until it accepts connections.
//
// nats-server starts its routes only after its client listener is up (StartRouting waits for it), so
// DontListen works only for a node without routes. A routed node without client_listen therefore listens on an
// ephemeral 127.0.0.1 port guarded by a random token that only this process knows; the node itself always uses
// an in-process connection. client_listen, when set, is open without authentication: bind it to loopback or a
// private network (monitoring and the nats CLI).
func startEmbedded(cfg *Config, opts Options) (*server.Server, string, error) {
	o := &server.Options{
		ServerName: cfg.Node,
		JetStream:  true,
		StoreDir:   cfg.NATS.StoreDir,
		MaxPayload: embeddedMaxPayload,
		NoSigs:     true, // the broker owns signal handling
		NoLog:      opts.Logger == nil,
	}
	token := ""
	switch {
	case cfg.NATS.ClientListen != "":
		host, port, err := splitHostPort(cfg.NATS.ClientListen)
		if err != nil {
			return nil, "", fmt.Errorf("cluster: nats.client_listen: %w", err)
		}
		o.Host, o.Port = host, port
	case cfg.NATS.Listen != "":
		token = randomToken()
		o.Host, o.Port, o.Authorization = "127.0.0.1", server.RANDOM_PORT, token
	default:
		o.DontListen = true
	}
	if cfg.NATS.Listen != "" {
		host, port, err := splitHostPort(cfg.NATS.Listen)
		if err != nil {
			return nil, "", fmt.Errorf("cluster: nats.listen: %w", err)
		}
		o.Cluster = server.ClusterOpts{Name: ClusterName, Host: host, Port: port, NoAdvertise: cfg.NATS.ClientListen == ""}
		for _, r := range cfg.NATS.Routes {
			u, err := url.Parse(r)
			if err != nil {
				return nil, "", fmt.Errorf("cluster: nats.routes: %q is not a URL", r)
			}
			o.Routes = append(o.Routes, u)
		}
	}
	srv, err := server.NewServer(o)
	if err != nil {
		return nil, "", fmt.Errorf("cluster: embedded NATS server: %w", err)
	}
	if opts.Logger != nil {
		srv.SetLoggerV2(slogAdapter{opts.Logger.With("component", "nats-server")}, false, false, false)
	}
	srv.Start()
	if !srv.ReadyForConnections(opts.StartTimeout) {
		srv.Shutdown()
		return nil, "", fmt.Errorf("cluster: embedded NATS server not ready within %s", opts.StartTimeout)
	}
	return srv, token, nil
}

func splitHostPort(hp string) (string, int, error) {
	host, ps, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(ps)
	if err != nil {
		return "", 0, err
	}
	if port == 0 {
		port = server.RANDOM_PORT // nats-server reads 0 as "off"
	}
	return host, port, nil
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand, Go 1.24+)
	return hex.EncodeToString(b)
}

// connect opens this node's NATS connection: in-process to the embedded server, or to cfg.NATS.URL.
// events receives connection state changes: up false when disconnected or closed, true when reconnected.
func connect(ctx context.Context, cfg *Config, srv *server.Server, token string, events func(up bool)) (*nats.Conn, error) {
	common := []nats.Option{
		nats.Name("idmq " + cfg.Node),
		nats.DisconnectErrHandler(func(*nats.Conn, error) { events(false) }),
		nats.ReconnectHandler(func(*nats.Conn) { events(true) }),
		nats.ClosedHandler(func(*nats.Conn) { events(false) }),
	}
	if srv != nil {
		opts := append(common, nats.InProcessServer(srv), nats.MaxReconnects(-1))
		if token != "" {
			opts = append(opts, nats.Token(token))
		}
		nc, err := nats.Connect("", opts...)
		if err != nil {
			return nil, fmt.Errorf("cluster: in-process NATS connection: %w", err)
		}
		return nc, nil
	}
	opts := append(common,
		nats.MaxReconnects(-1), // a node keeps trying and reports not ready meanwhile
		nats.ReconnectWait(250*time.Millisecond),
		nats.RetryOnFailedConnect(false),
	)
	if cfg.NATS.CredentialsFile != "" {
		opts = append(opts, nats.UserCredentials(cfg.NATS.CredentialsFile))
	}
	if dl, ok := ctx.Deadline(); ok {
		opts = append(opts, nats.Timeout(time.Until(dl)))
	}
	nc, err := nats.Connect(cfg.NATS.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("cluster: connecting to nats.url: %w", err)
	}
	return nc, nil
}

// slogAdapter sends nats-server's log lines to the broker's logger.
type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Noticef(f string, v ...any) { a.l.Info(fmt.Sprintf(f, v...)) }
func (a slogAdapter) Warnf(f string, v ...any)   { a.l.Warn(fmt.Sprintf(f, v...)) }
func (a slogAdapter) Fatalf(f string, v ...any)  { a.l.Error(fmt.Sprintf(f, v...)) }
func (a slogAdapter) Errorf(f string, v ...any)  { a.l.Error(fmt.Sprintf(f, v...)) }
func (a slogAdapter) Debugf(f string, v ...any)  { a.l.Debug(fmt.Sprintf(f, v...)) }
func (a slogAdapter) Tracef(f string, v ...any)  { a.l.Debug(fmt.Sprintf(f, v...)) }

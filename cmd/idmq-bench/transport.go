package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"os"
	"sync"
	"sync/atomic"

	"github.com/gorilla/websocket"

	"github.com/idmq/idmq/internal/wsconn"
)

// dialer opens one broker connection over the configured transport, rotating the local source address.
type dialer struct {
	transport string
	addr      string
	wsURL     string
	tls       *tls.Config
	sources   []*net.TCPAddr // empty: the kernel picks 127.0.0.1
	next      atomic.Uint64
	ws        *websocket.Dialer
}

func newDialer(c *config) (*dialer, error) {
	d := &dialer{transport: c.Transport, addr: c.Addr}
	for i := 0; i < c.sourceIPCount(); i++ {
		d.sources = append(d.sources, &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i))})
	}
	if c.Transport == "tls" || c.Transport == "wss" {
		host, _, _ := net.SplitHostPort(c.Addr)
		d.tls = &tls.Config{ServerName: host, InsecureSkipVerify: c.TLSInsecure, MinVersion: tls.VersionTLS12}
		if c.TLSServer != "" {
			d.tls.ServerName = c.TLSServer
		}
		if c.TLSCAFile != "" {
			pem, err := os.ReadFile(c.TLSCAFile)
			if err != nil {
				return nil, fmt.Errorf("--tls-ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("--tls-ca: %s holds no PEM certificate", c.TLSCAFile)
			}
			d.tls.RootCAs = pool
		}
	}
	if c.Transport == "ws" || c.Transport == "wss" {
		scheme := "ws"
		if c.Transport == "wss" {
			scheme = "wss"
		}
		d.wsURL = (&url.URL{Scheme: scheme, Host: c.Addr, Path: c.WSPath}).String()
		d.ws = &websocket.Dialer{
			NetDialContext:  d.dialTCP,
			TLSClientConfig: d.tls,
			Subprotocols:    []string{"mqtt"},
			// Small buffers and a shared write pool keep 10,000+ idle clients cheap in this process.
			ReadBufferSize:  1024,
			WriteBufferSize: 1024,
			WriteBufferPool: &sync.Pool{},
		}
	}
	return d, nil
}

func (d *dialer) dialTCP(ctx context.Context, network, addr string) (net.Conn, error) {
	nd := net.Dialer{}
	if len(d.sources) > 0 {
		nd.LocalAddr = d.sources[d.next.Add(1)%uint64(len(d.sources))]
	}
	return nd.DialContext(ctx, network, addr)
}

// Dial returns a connection that carries MQTT bytes whatever the transport.
func (d *dialer) Dial(ctx context.Context) (net.Conn, error) {
	switch d.transport {
	case "tls":
		conn, err := d.dialTCP(ctx, "tcp", d.addr)
		if err != nil {
			return nil, err
		}
		tc := tls.Client(conn, d.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, fmt.Errorf("tls handshake: %w", err)
		}
		return tc, nil
	case "ws", "wss":
		ws, resp, err := d.ws.DialContext(ctx, d.wsURL, nil)
		if resp != nil && resp.Body != nil {
			resp.Body.Close()
		}
		if err != nil {
			if resp != nil {
				return nil, fmt.Errorf("websocket upgrade: HTTP %d", resp.StatusCode)
			}
			return nil, fmt.Errorf("websocket: %w", err)
		}
		return wsconn.New(ws), nil
	}
	return d.dialTCP(ctx, "tcp", d.addr)
}

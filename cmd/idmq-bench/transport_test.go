package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/hooks/auth"

	"github.com/idmq/idmq/internal/testkit"
)

func TestDialerSpreadsSourceAddresses(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	d, err := newDialer(&config{Transport: "tcp", Addr: l.Addr().String(), SourceIPs: 3})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for range 6 {
		c, err := d.Dial(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		peer, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		seen[peer.RemoteAddr().(*net.TCPAddr).IP.String()]++
		peer.Close()
		c.Close()
	}
	want := map[string]int{"127.0.0.2": 2, "127.0.0.3": 2, "127.0.0.4": 2}
	if len(seen) != len(want) {
		t.Fatalf("source addresses %v, want %v", seen, want)
	}
	for ip, n := range want {
		if seen[ip] != n {
			t.Errorf("source addresses %v, want %v", seen, want)
		}
	}
}

func TestDialerTLSAndWSS(t *testing.T) {
	ca := testkit.NewCA(t)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, ca.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	m := testkit.StartMochi(t, testkit.MochiOptions{WebSocket: true, TLS: ca.ServerTLS(t)}, new(auth.AllowHook))

	tests := []struct {
		name      string
		transport string
		addr      string
		ca        string
		wantErr   bool
	}{
		{"tls with the CA", "tls", m.TCP, caFile, false},
		{"tls without the CA", "tls", m.TCP, "", true},
		{"wss with the CA", "wss", m.WS, caFile, false},
		{"wss without the CA", "wss", m.WS, "", true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := newDialer(&config{Transport: tt.transport, Addr: tt.addr, TLSCAFile: tt.ca, WSPath: "/mqtt"})
			if err != nil {
				t.Fatal(err)
			}
			o := connectOptions{version: 5, clientID: fmt.Sprintf("tls%d", i), keepalive: 30, timeout: 5 * time.Second}
			c, _, err := dialClient(context.Background(), d, o)
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), "certificate") {
					t.Fatalf("err = %v, want a certificate error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c.disconnect()
		})
	}
}

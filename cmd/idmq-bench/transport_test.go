package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/idmq/idmq/mochifix"
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

// testCert makes a self-signed certificate for 127.0.0.1 and writes its PEM to a file for --tls-ca.
func testCert(t *testing.T) (tls.Certificate, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "idmq-bench test"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, caFile
}

func TestDialerTLSAndWSS(t *testing.T) {
	cert, caFile := testCert(t)
	serverTLS := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	s := mqtt.New(&mqtt.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := s.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	tlsListener := listeners.NewTCP(listeners.Config{ID: "tls", Address: "127.0.0.1:0", TLSConfig: serverTLS})
	if err := s.AddListener(mochifix.Listener(tlsListener, s, mochifix.ListenerOptions{})); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wssAddr := l.Addr().String()
	l.Close()
	if err := s.AddListener(mochifix.Listener(listeners.NewWebsocket(listeners.Config{ID: "wss", Address: wssAddr, TLSConfig: serverTLS}), s, mochifix.ListenerOptions{})); err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve() }()
	t.Cleanup(func() { _ = mochifix.CloseServer(s) })
	waitListening(t, wssAddr)

	tests := []struct {
		name      string
		transport string
		addr      string
		ca        string
		wantErr   bool
	}{
		{"tls with the CA", "tls", tlsListener.Address(), caFile, false},
		{"tls without the CA", "tls", tlsListener.Address(), "", true},
		{"wss with the CA", "wss", wssAddr, caFile, false},
		{"wss without the CA", "wss", wssAddr, "", true},
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

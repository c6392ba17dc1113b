package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"

	"github.com/idmq/idmq/internal/testkit"
)

// testCA is the test kit's CA, its certificate written to caFile for the broker and for command-line
// clients.
type testCA struct {
	*testkit.CA
	caFile string
}

func newTestCA(t *testing.T, dir string) *testCA {
	t.Helper()
	ca := &testCA{CA: testkit.NewCA(t), caFile: filepath.Join(dir, "ca.pem")}
	if err := os.WriteFile(ca.caFile, ca.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return ca
}

// issue writes a server certificate for 127.0.0.1/localhost with the given serial to certFile/keyFile.
func (ca *testCA) issue(t *testing.T, certFile, keyFile string, serial int64) {
	t.Helper()
	der, key := ca.Issue(t, serial)
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	// Write to temp names and rename, as a certificate manager would, so a reload never reads half a file.
	writePEM(t, certFile+".tmp", "CERTIFICATE", der)
	writePEM(t, keyFile+".tmp", "EC PRIVATE KEY", keyDER)
	if err := os.Rename(keyFile+".tmp", keyFile); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(certFile+".tmp", certFile); err != nil {
		t.Fatal(err)
	}
}

// clientTLSFor is what a client on transport trusts: this CA over tls and wss, nil (no TLS) over tcp and ws.
func (ca *testCA) clientTLSFor(transport string) *tls.Config {
	if transport == "tls" || transport == "wss" {
		return ca.ClientTLS()
	}
	return nil
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

package broker

import (
	"crypto/tls"
	"fmt"
	"sync/atomic"
)

// certReloader serves a certificate that SIGHUP can replace without dropping connections: existing TLS
// sessions keep the certificate they negotiated, new handshakes get the new one.
type certReloader struct {
	certFile, keyFile string
	cert              atomic.Pointer[tls.Certificate]
}

func newCertReloader(certFile, keyFile string) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile}
	if err := r.reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// reload keeps the old certificate when the new files are unreadable or do not match.
func (r *certReloader) reload() error {
	c, err := loadKeyPair(r.certFile, r.keyFile)
	if err != nil {
		return err
	}
	r.cert.Store(c)
	return nil
}

func (r *certReloader) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return r.cert.Load(), nil
		},
	}
}

func loadKeyPair(certFile, keyFile string) (*tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("loading certificate %s / key %s: %w", certFile, keyFile, err)
	}
	return &c, nil
}

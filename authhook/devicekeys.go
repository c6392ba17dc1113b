package authhook

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"
)

// maxDeviceKeys bounds the keys of one device, as in Cloud IoT Core: a CONNECT costs at most this many
// signature checks, whatever the token.
const maxDeviceKeys = 3

// deviceAttributes are the attributes of a device identity: device_id (the device id as it is, unescaped),
// registry and region (from a full Cloud IoT client id path; absent for a bare id).
var deviceAttributes = []string{"device_id", "registry", "region"}

// validDeviceID is Cloud IoT Core's device id alphabet, allowing a leading digit (numeric device ids) and
// short ids. It never contains '/', so a device id is also a safe file name in registry_dir.
func validDeviceID(s string) bool {
	if len(s) == 0 || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case i > 0 && strings.IndexByte("-._~+%", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// deviceKey is one public key of a device.
type deviceKey struct {
	pub     crypto.PublicKey // *rsa.PublicKey (>= 2048 bits), *ecdsa.PublicKey (P-256) or ed25519.PublicKey
	expires time.Time        // zero = never
}

func (k deviceKey) expiredAt(now time.Time) bool {
	return !k.expires.IsZero() && !now.Before(k.expires)
}

// device is a registered device. Immutable once published in a deviceSet.
type device struct {
	id      string
	keys    []deviceKey
	blocked bool
	source  string // "config" or the registry file, for logs
}

// deviceSet is immutable: the registry builds a new one and swaps the pointer, so a CONNECT finds its device
// with one atomic load and one map lookup, whatever the number of devices.
type deviceSet struct {
	byID map[string]*device
	keys int
}

// parseDeviceKeys reads every PEM block of data: "PUBLIC KEY" (PKIX), "RSA PUBLIC KEY" (PKCS#1) or
// "CERTIFICATE" (its NotAfter becomes the key's expiry; the chain is not checked, as in Cloud IoT Core,
// where device certificates are usually self-signed).
func parseDeviceKeys(data []byte) ([]deviceKey, error) {
	var keys []deviceKey
	for n := 1; ; n++ {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		k, err := parseDeviceKeyBlock(block)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", n, err)
		}
		keys = append(keys, k)
	}
	switch {
	case len(keys) == 0:
		return nil, errors.New("no PEM public key or certificate")
	case len(keys) > maxDeviceKeys:
		return nil, fmt.Errorf("%d keys, a device has at most %d", len(keys), maxDeviceKeys)
	}
	return keys, nil
}

func parseDeviceKeyBlock(b *pem.Block) (deviceKey, error) {
	var (
		k   deviceKey
		pub any
		err error
	)
	switch b.Type {
	case "PUBLIC KEY":
		pub, err = x509.ParsePKIXPublicKey(b.Bytes)
	case "RSA PUBLIC KEY":
		pub, err = x509.ParsePKCS1PublicKey(b.Bytes)
	case "CERTIFICATE":
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(b.Bytes); err == nil {
			pub, k.expires = cert.PublicKey, cert.NotAfter
		}
	default:
		if strings.Contains(b.Type, "PRIVATE KEY") {
			return k, fmt.Errorf("%s: a private key does not belong in the registry; register the device's public key or certificate", b.Type)
		}
		return k, fmt.Errorf("unsupported PEM block %q (want PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE)", b.Type)
	}
	if err != nil {
		return k, fmt.Errorf("%s: %w", b.Type, err)
	}
	switch p := pub.(type) {
	case *rsa.PublicKey:
		if p.N.BitLen() < 2048 {
			return k, fmt.Errorf("RSA key of %d bits is too small (want at least 2048)", p.N.BitLen())
		}
	case *ecdsa.PublicKey:
		if p.Curve != elliptic.P256() {
			return k, fmt.Errorf("EC key on %s: ES256 needs P-256", p.Curve.Params().Name)
		}
	case ed25519.PublicKey:
	default:
		return k, fmt.Errorf("unsupported key type %T (want RSA, EC P-256 or Ed25519)", pub)
	}
	k.pub = pub
	return k, nil
}

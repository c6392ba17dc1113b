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
	"os"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// MintDeviceToken signs a device token as Cloud IoT Core and ClearBlade devices do: header {alg, typ: JWT},
// claims {iat: now, exp: now + ttl, aud: project}, base64url without padding, no iss. alg "" picks the key's
// own (RS256 for RSA, ES256 for P-256, EdDSA for Ed25519); otherwise it must be one of those and fit the key.
// ttl is 1s..24h, the longest a devices provider accepts by default.
func MintDeviceToken(key crypto.Signer, project, alg string, ttl time.Duration, now time.Time) (string, error) {
	if key == nil {
		return "", errors.New("authhook: device token: no key")
	}
	if project == "" {
		return "", errors.New("authhook: device token: the project (aud) must not be empty")
	}
	if ttl < time.Second || ttl > defaultDeviceMaxLifetime {
		return "", fmt.Errorf("authhook: device token: ttl must be between 1s and %s, got %s", defaultDeviceMaxLifetime, ttl)
	}
	method, err := deviceSigningMethod(key.Public())
	if err != nil {
		return "", fmt.Errorf("authhook: device token: %w", err)
	}
	if alg != "" && alg != method.Alg() {
		return "", fmt.Errorf("authhook: device token: %s keys sign %s, not %q", keyKind(key.Public()), method.Alg(), alg)
	}
	claims := jwt.MapClaims{"iat": now.Unix(), "exp": now.Add(ttl).Unix(), "aud": project}
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		return "", fmt.Errorf("authhook: device token: %w", err)
	}
	return s, nil
}

// deviceSigningMethod is the one algorithm a device key signs with.
func deviceSigningMethod(pub crypto.PublicKey) (jwt.SigningMethod, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("RSA key of %d bits is too small (want at least 2048)", k.N.BitLen())
		}
		return jwt.SigningMethodRS256, nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("EC key on %s: device tokens use ES256, which needs P-256", k.Curve.Params().Name)
		}
		return jwt.SigningMethodES256, nil
	case ed25519.PublicKey:
		return jwt.SigningMethodEdDSA, nil
	}
	return nil, fmt.Errorf("unsupported key type %T (want RSA, EC P-256 or Ed25519)", pub)
}

func keyKind(pub crypto.PublicKey) string {
	switch pub.(type) {
	case *rsa.PublicKey:
		return "RSA"
	case *ecdsa.PublicKey:
		return "EC"
	}
	return "Ed25519"
}

// ReadPrivateKey reads a PEM private key as OpenSSL writes them: PKCS#8 "PRIVATE KEY", "EC PRIVATE KEY"
// (with or without a leading "EC PARAMETERS" block, as `openssl ecparam -genkey` writes) or
// "RSA PRIVATE KEY". Encrypted keys are not supported.
func ReadPrivateKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("authhook: private key: %w", err)
	}
	key, err := parsePrivateKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("authhook: private key %s: %w", path, err)
	}
	return key, nil
}

func parsePrivateKeyPEM(data []byte) (crypto.Signer, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("no PEM private key block")
		}
		var (
			key any
			err error
		)
		switch block.Type {
		case "EC PARAMETERS":
			continue
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		default:
			return nil, fmt.Errorf("unsupported PEM block %q (want PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY)", block.Type)
		}
		if err != nil {
			return nil, err
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("unsupported key type %T", key)
		}
		return signer, nil
	}
}

package authhook

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/golang-jwt/jwt/v5"
)

// loadSigningKey reads signing_key_file, or the generated key in dataDir, generating it (P-256, 0600) on
// first start.
func loadSigningKey(file, dataDir string) (crypto.Signer, error) {
	if file != "" {
		return readSigningKey(file)
	}
	if dataDir == "" {
		return nil, errors.New("authhook: the local provider needs a data directory or auth.signing_key_file")
	}
	path := filepath.Join(dataDir, signingKeyFileName)
	key, err := readSigningKey(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	return generateSigningKey(path)
}

func readSigningKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("authhook: signing key: %w", err)
	}
	signer, err := parsePrivateKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("authhook: signing key %s: %w", path, err)
	}
	if _, err := signingMethodFor(signer); err != nil {
		return nil, fmt.Errorf("authhook: signing key %s: %w", path, err)
	}
	return signer, nil
}

func generateSigningKey(path string) (crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("authhook: signing key: %w", err)
	}
	// Write to a private temporary file and rename, so a crash never leaves a half-written key behind.
	tmp, err := os.CreateTemp(filepath.Dir(path), ".signing-key-*")
	if err != nil {
		return nil, fmt.Errorf("authhook: signing key: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("authhook: signing key: %w", err)
	}
	if err := pem.Encode(tmp, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("authhook: signing key: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, err
	}
	if err := tmp.Close(); err != nil {
		return nil, err
	}
	// Link fails if another process created the key meanwhile; then use theirs.
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return readSigningKey(path)
		}
		return nil, fmt.Errorf("authhook: signing key: %w", err)
	}
	return key, nil
}

func signingMethodFor(s crypto.Signer) (jwt.SigningMethod, error) {
	switch k := s.Public().(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return jwt.SigningMethodES256, nil
		case elliptic.P384():
			return jwt.SigningMethodES384, nil
		}
		return nil, fmt.Errorf("unsupported EC curve %s (want P-256 or P-384)", k.Curve.Params().Name)
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("RSA key of %d bits is too small (want at least 2048)", k.N.BitLen())
		}
		return jwt.SigningMethodRS256, nil
	case ed25519.PublicKey:
		return jwt.SigningMethodEdDSA, nil
	}
	return nil, fmt.Errorf("unsupported key type %T", s.Public())
}

// thumbprint is the RFC 7638 JWK thumbprint, used as the kid.
func thumbprint(pub any) (string, error) {
	b64 := base64.RawURLEncoding.EncodeToString
	var canonical string
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		size := (k.Curve.Params().BitSize + 7) / 8
		x, y := make([]byte, size), make([]byte, size)
		k.X.FillBytes(x)
		k.Y.FillBytes(y)
		canonical = fmt.Sprintf(`{"crv":%q,"kty":"EC","x":%q,"y":%q}`, k.Curve.Params().Name, b64(x), b64(y))
	case *rsa.PublicKey:
		e := big64(k.E)
		canonical = fmt.Sprintf(`{"e":%q,"kty":"RSA","n":%q}`, b64(e), b64(k.N.Bytes()))
	case ed25519.PublicKey:
		canonical = fmt.Sprintf(`{"crv":"Ed25519","kty":"OKP","x":%q}`, b64(k))
	default:
		return "", fmt.Errorf("unsupported key type %T", pub)
	}
	sum := sha256.Sum256([]byte(canonical))
	return b64(sum[:]), nil
}

func big64(e int) []byte {
	var b []byte
	for e > 0 {
		b = append([]byte{byte(e)}, b...)
		e >>= 8
	}
	return b
}

package main

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"github.com/golang-jwt/jwt/v5"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/packets"
)

// verifyBaselineHook is the connect-storm baseline of issue 8, "no-auth connect cost + one verify", measured
// under the same load as idmq itself: allow-all, plus one bare golang-jwt check of the CONNECT password
// with the key in hand (what `BenchmarkVerify .../jwt.Parse` measures on an idle core). A CONNECT whose
// password does not verify is refused, so a broken baseline cannot pass for a fast one.
type verifyBaselineHook struct {
	auth.AllowHook
	public crypto.PublicKey
}

func (h *verifyBaselineHook) ID() string { return "allow-all-plus-verify" }

func (h *verifyBaselineHook) OnConnectAuthenticate(_ *mqtt.Client, pk packets.Packet) bool {
	_, err := jwt.Parse(string(pk.Connect.Password), func(*jwt.Token) (any, error) { return h.public, nil })
	return err == nil
}

// newVerifyBaselineHook reads the public half of the local provider's signing key (a PKCS#8 PEM file, as
// `idmq-bench keygen` writes it).
func newVerifyBaselineHook(signingKeyFile string) (*verifyBaselineHook, error) {
	if signingKeyFile == "" {
		return nil, errors.New("the config sets no auth.signing_key_file")
	}
	data, err := os.ReadFile(signingKeyFile)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM block", signingKeyFile)
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", signingKeyFile, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: not a signing key", signingKeyFile)
	}
	return &verifyBaselineHook{public: signer.Public()}, nil
}

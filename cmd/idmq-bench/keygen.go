package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

// runKeygen is `idmq-bench keygen`: a PKCS#8 signing key for the local provider's signing_key_file, so
// that the connect storm can be run once per JWT algorithm.
func runKeygen(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("idmq-bench keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	alg := fs.String("alg", "ES256", "RS256 (RSA 2048), ES256 (P-256) or EdDSA (Ed25519)")
	out := fs.String("o", "", "output `file`, written with mode 0600 (required)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *out == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "idmq-bench keygen: usage: idmq-bench keygen --alg RS256|ES256|EdDSA -o FILE")
		return 2
	}
	key, err := generateKey(*alg)
	if err != nil {
		fmt.Fprintf(stderr, "idmq-bench keygen: --alg: %v\n", err)
		return 2
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		fmt.Fprintf(stderr, "idmq-bench keygen: %v\n", err)
		return 1
	}
	f, err := os.OpenFile(*out, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		fmt.Fprintf(stderr, "idmq-bench keygen: %v\n", err)
		return 1
	}
	err = pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		fmt.Fprintf(stderr, "idmq-bench keygen: %v\n", err)
		return 1
	}
	return 0
}

func generateKey(alg string) (crypto.Signer, error) {
	switch alg {
	case "RS256":
		return rsa.GenerateKey(rand.Reader, 2048)
	case "ES256":
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "EdDSA":
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	}
	return nil, fmt.Errorf("%q is not RS256, ES256 or EdDSA", alg)
}

package e2e

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/idmq/idmq/internal/testkit"
)

// devicesBroker serves TLS only, with the local provider (for a backend subscriber) and a devices provider
// whose keys live in registry_dir; the device rules are those of config.example.yaml.
const devicesBroker = `
data_dir: ./data
listeners:
  - {type: tls, address: "127.0.0.1:{{tls}}", cert_file: server.pem, key_file: server-key.pem}
http: {address: "127.0.0.1:{{http}}"}
auth:
  providers:
    - {name: local, type: local, attributes: [role]}
    - {name: fleet, type: devices, project: my-project, registry_dir: devices}
acl:
  rules:
    - {topic: "/devices/+/events/#", access: subscribe, when: {role: backend}}
    - {topic: "/devices/%u/events/#", access: publish}
    - {topic: "/devices/%u/state", access: publish}
    - {topic: "/devices/%u/config", access: subscribe}
    - {topic: "/devices/%u/commands/#", access: subscribe}
`

// newDeviceKey writes a device's private key where the device keeps it and returns the signer; the
// public key goes into the registry separately.
func newDeviceKey(t *testing.T, path, alg string) crypto.Signer {
	t.Helper()
	key := testkit.NewKey(t, alg, "").Signer
	var (
		der []byte
		typ string
		err error
	)
	switch k := key.(type) {
	case *ecdsa.PrivateKey: // as `openssl ecparam -genkey -name prime256v1 -noout` writes it
		typ = "EC PRIVATE KEY"
		der, err = x509.MarshalECPrivateKey(k)
	default: // RSA, as `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048` writes it
		typ = "PRIVATE KEY"
		der, err = x509.MarshalPKCS8PrivateKey(k)
	}
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, path, typ, der)
	return key
}

func registerDevice(t *testing.T, p *idmqProc, id string, key crypto.Signer) {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, filepath.Join(p.dir, "devices", id+".pem"), "PUBLIC KEY", der)
}

// TestDeviceMosquittoTLS: devices connect over TLS with mosquitto_pub, presenting a token minted by
// `idmq token device` from their own private key, and publish telemetry a backend receives.
func TestDeviceMosquittoTLS(t *testing.T) {
	pubBin := requireTool(t, "mosquitto_pub", "apt-get install mosquitto-clients")
	p := newIdmq(t, devicesBroker)
	ca := newTestCA(t, p.dir)
	ca.issue(t, filepath.Join(p.dir, "server.pem"), filepath.Join(p.dir, "server-key.pem"), 100)
	if err := os.Mkdir(filepath.Join(p.dir, "devices"), 0o755); err != nil {
		t.Fatal(err)
	}
	registerDevice(t, p, "thermo-ec", newDeviceKey(t, filepath.Join(p.dir, "thermo-ec-private.pem"), "ES256"))
	registerDevice(t, p, "thermo-rsa", newDeviceKey(t, filepath.Join(p.dir, "thermo-rsa-private.pem"), "RS256"))
	p.start()

	backend, connack := connectV5(t, dialV5(t, p, "tls", ca.ClientTLS()), &paho.Connect{ClientID: "backend", CleanStart: true,
		Password: []byte(p.token("backend", "--claim", "role=backend")), PasswordFlag: true})
	if backend == nil {
		t.Fatalf("backend CONNACK 0x%02X", connack.ReasonCode)
	}
	if _, err := backend.Subscribe(context.Background(), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "/devices/+/events/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}

	deviceToken := func(device string, extra ...string) string {
		t.Helper()
		args := append([]string{"token", "device", "--key", device + "-private.pem", "--project", "my-project"}, extra...)
		out, errOut, code := p.idmqCmd(args...)
		if code != 0 || strings.Count(strings.TrimSpace(out), ".") != 2 || strings.Contains(out, "=") {
			t.Fatalf("idmq token device (%d): stdout %q, stderr %q", code, out, errOut)
		}
		return strings.TrimSpace(out)
	}
	mosquittoPub := func(clientID, token, version, topic, payload string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, pubBin, "-h", "localhost", "-p", strconv.Itoa(p.ports["tls"]), "--cafile", ca.caFile,
			"-V", version, "-i", clientID, "-u", "unused", "-P", token, "-t", topic, "-q", "1", "-m", payload).CombinedOutput()
		return string(out), err
	}
	const cloudIoTPath = "projects/my-project/locations/europe-west1/registries/thermostats/devices/"

	for _, tc := range []struct {
		name, device, clientID, version string
		extra                           []string
	}{
		{name: "ES256, full client id path, 3.1.1", device: "thermo-ec", clientID: cloudIoTPath + "thermo-ec", version: "mqttv311", extra: []string{"--alg", "ES256", "--ttl", "20m"}},
		{name: "RS256, bare client id, 5", device: "thermo-rsa", clientID: "thermo-rsa", version: "mqttv5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			topic := "/devices/" + tc.device + "/events/temperature"
			if out, err := mosquittoPub(tc.clientID, deviceToken(tc.device, tc.extra...), tc.version, topic, "21.5"); err != nil {
				t.Fatalf("mosquitto_pub: %v %s", err, out)
			}
			if m := backend.Expect(t, topic, 5*time.Second); string(m.Payload) != "21.5" {
				t.Fatalf("payload %q", m.Payload)
			}
		})
	}

	t.Run("a device publishes only under its own id", func(t *testing.T) {
		tok := deviceToken("thermo-rsa")
		// Accepted at CONNECT, denied by the ACL (v5 PUBACK 0x87), so never delivered; the next allowed
		// message, published after it, is the first the backend sees.
		_, _ = mosquittoPub("thermo-rsa", tok, "mqttv5", "/devices/thermo-ec/events/spoofed", "99")
		if out, err := mosquittoPub("thermo-rsa", tok, "mqttv5", "/devices/thermo-rsa/events/after", "ok"); err != nil {
			t.Fatalf("mosquitto_pub: %v %s", err, out)
		}
		select {
		case m := <-backend.Received:
			if m.Topic != "/devices/thermo-rsa/events/after" {
				t.Fatalf("the backend received %s %q: a device published under another device's id", m.Topic, m.Payload)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the allowed message was not delivered")
		}
	})

	t.Run("refusals", func(t *testing.T) {
		tok := deviceToken("thermo-ec")
		for _, tc := range []struct{ name, clientID, reason string }{
			{name: "wrong project in the client id", clientID: "projects/other/locations/l/registries/r/devices/thermo-ec", reason: "project_mismatch"},
			{name: "another device's client id", clientID: "thermo-rsa", reason: "invalid_signature"},
			{name: "unknown device", clientID: "thermo-nope", reason: "unknown_device"},
		} {
			out, err := mosquittoPub(tc.clientID, tok, "mqttv311", "/devices/x/events/t", "x")
			if err == nil || !strings.Contains(out, "Connection Refused: bad user name or password") {
				t.Fatalf("%s: mosquitto_pub accepted or failed otherwise: %v %s", tc.name, err, out)
			}
			if !p.waitLog(`reason=`+tc.reason, 5*time.Second) {
				t.Fatalf("%s: no refusal with reason %s in the log", tc.name, tc.reason)
			}
		}
	})

	t.Run("key file dropped into the running broker", func(t *testing.T) {
		registerDevice(t, p, "thermo-new", newDeviceKey(t, filepath.Join(p.dir, "thermo-new-private.pem"), "ES256"))
		tok := deviceToken("thermo-new")
		start := time.Now()
		for {
			out, err := mosquittoPub("thermo-new", tok, "mqttv5", "/devices/thermo-new/state", "online")
			if err == nil {
				break
			}
			if time.Since(start) > 5*time.Second {
				t.Fatalf("a new device's key is not accepted 5 s after it was added: %v %s", err, out)
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Logf("new device accepted after %s", time.Since(start).Round(time.Millisecond))
	})
}

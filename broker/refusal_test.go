package broker

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/idmq/idmq/authhook"
	"github.com/idmq/idmq/internal/testkit"
	"github.com/idmq/idmq/refusal"
)

// TestEveryRefusalOnTheWire walks refusal.Table on a real broker (New: rate limit, authhook, aclhook, mochi)
// with real paho clients over TCP loopback. For every row, a CONNECT refused with that Kind shows the row's
// CONNACK to an MQTT 5 client (code and Reason String) and to an MQTT 3.1.1 client (return code, or a
// closed connection), and an MQTT 5 re-authentication refused with it ends in the row's DISCONNECT; each
// refusal increments the row's counter by one and logs one line at the row's level. A case no client can
// cause says why, so every row is either walked or explained.
func TestEveryRefusalOnTheWire(t *testing.T) {
	w := newRefusalWorld(t)
	cases := w.cases(t)
	for _, row := range refusal.Table {
		c, ok := cases[row.Kind]
		if !ok {
			t.Errorf("refusal.Table row %q has no case in TestEveryRefusalOnTheWire: add one", row.Kind)
			continue
		}
		t.Run(string(row.Kind), func(t *testing.T) {
			for _, v := range []byte{5, 4} {
				t.Run(fmt.Sprintf("CONNECT v%d", v), func(t *testing.T) {
					if row.V5 == 0 {
						t.Skipf("never refuses a CONNECT")
					}
					if why := c.connectUnreachable[v]; why != "" {
						t.Skip(why)
					}
					w.expectConnack(t, row, v, c)
				})
				t.Run(fmt.Sprintf("AUTH v%d", v), func(t *testing.T) {
					switch {
					case row.Disconnect == 0:
						t.Skipf("never ends an established connection")
					case c.authUnreachable != "":
						t.Skip(c.authUnreachable)
					case v < 5 && row.Kind != refusal.AuthProtocolError:
						t.Skip("on MQTT 3.1.1 every AUTH is an auth_protocol_error")
					}
					w.expectDisconnect(t, row, v, c)
				})
			}
		})
	}
}

// refusalCase is how a client causes one Kind of refusal.
type refusalCase struct {
	on      *walkBroker          // nil: the world's main broker
	connect func(v byte) attempt // a CONNECT refused with the Kind
	before  func(t *testing.T)   // run before the refused CONNECT (e.g. spend the rate limit)
	// auth is an AUTH refused with the Kind, on the connection conn makes (MQTT 5: Authentication Method JWT).
	conn attempt
	auth reauth

	connectUnreachable map[byte]string
	authUnreachable    string
}

// attempt is one CONNECT.
type attempt struct {
	clientID, username string
	password           string // MQTT 5: Authentication Data when method is set
	method             string // MQTT 5 Authentication Method
	will               string // Will topic, "" = none
}

// reauth is one AUTH packet.
type reauth struct {
	reason byte // 0x19 re-authenticate unless set
	method string
	token  string
}

// refusalWorld is a broker with every kind of provider, the keys to sign tokens for each, and a second broker
// with a connect rate a test can exceed.
type refusalWorld struct {
	main, limited            *walkBroker
	idp                      *testIdP
	deadIssuer               string
	devKey, oldKey, stranger testkit.Key
}

const walkProject = "walk-project"

func newRefusalWorld(t *testing.T) *refusalWorld {
	w := &refusalWorld{idp: newTestIdP(t), devKey: testkit.NewKey(t, "RS256", ""), oldKey: testkit.NewKey(t, "RS256", ""),
		stranger: testkit.NewKey(t, "RS256", "")}
	w.deadIssuer = fmt.Sprintf("http://127.0.0.1:%d", testkit.FreePort(t)) // nothing listens there
	dir := t.TempDir()
	devPEM, oldPEM := writePublicPEM(t, dir, "dev.pem", w.devKey), writePublicPEM(t, dir, "old.pem", w.oldKey)
	w.main = startWalkBroker(t, fmt.Sprintf(`
mqtt: {max_connect_rate: {per_second: 1000, burst: 1000}}
auth:
  providers:
    - {name: local, type: local}
    - name: corp
      type: oidc
      issuer: %[1]s
      jwks_url: %[1]s/jwks
      audiences: [mqtt]
      authorized_parties: ["https://app.example.com"]
      claims: [{path: org_id, attribute: org_id, required: true}]
    - {name: down, type: oidc, issuer: %[2]s, jwks_url: %[2]s/jwks}
    - name: fleet
      type: devices
      project: %[3]s
      devices:
        - {id: dev-1, keys: [{file: %[4]s}, {file: %[5]s, expires: "2020-01-01T00:00:00Z"}]}
        - {id: dev-blocked, blocked: true}
`, w.idp.Issuer(), w.deadIssuer, walkProject, devPEM, oldPEM))
	w.limited = startWalkBroker(t, `
mqtt: {max_connect_rate: {per_second: 0.001, burst: 1}}
auth: {providers: [{name: local, type: local}]}
`)
	return w
}

// writePublicPEM writes k's public half to dir/name, as an operator registers a device key.
func writePublicPEM(t *testing.T, dir, name string, k testkit.Key) string {
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, k.PublicPEM(t), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// user is a corp token for sub with edit applied to its claims (a nil value deletes the claim).
func (w *refusalWorld) user(t *testing.T, sub string, edit jwt.MapClaims) string {
	c := jwt.MapClaims{"sub": sub, "azp": "https://app.example.com", "org_id": "acme"}
	for k, v := range edit {
		c[k] = v
	}
	return w.idp.token(t, c)
}

// forged is a corp-looking token for alice from issuer iss, signed under kid by a key the issuer never published.
func (w *refusalWorld) forged(t *testing.T, iss, kid string) string {
	k := w.stranger
	k.KID = kid
	return k.Sign(t, jwt.MapClaims{"iss": iss, "sub": "alice", "aud": "mqtt", "azp": "https://app.example.com",
		"org_id": "acme", "iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix()})
}

// device is a token of a Cloud IoT device, signed by key, issued iat ago and valid for life.
func (w *refusalWorld) device(t *testing.T, key testkit.Key, iatAgo, life time.Duration) string {
	iat := time.Now().Add(-iatAgo)
	return key.SignWithoutKID(t, jwt.MapClaims{"aud": walkProject, "iat": iat.Unix(), "exp": iat.Add(life).Unix()})
}

func devicePath(project, id string) string {
	return "projects/" + project + "/locations/europe-west1/registries/walk/devices/" + id
}

func (w *refusalWorld) cases(t *testing.T) map[refusal.Kind]refusalCase {
	alice := w.user(t, "alice", nil)
	asAlice := func(id string) attempt {
		return attempt{clientID: id, username: "alice", password: alice, method: "JWT"}
	}
	dev1 := devicePath(walkProject, "dev-1")
	asDevice := attempt{clientID: dev1, username: "unused", password: w.device(t, w.devKey, 0, time.Hour), method: "JWT"}

	// A credential refused at CONNECT by the user's or the device's token, and at re-authentication the same.
	cred := func(kind refusal.Kind, username, token string) refusalCase {
		return refusalCase{
			connect: func(v byte) attempt {
				return attempt{clientID: fmt.Sprintf("walk-%s-v%d", kind, v), username: username, password: token}
			},
			conn: asAlice(fmt.Sprintf("walk-%s-auth", kind)), auth: reauth{method: "JWT", token: token},
		}
	}
	devCred := func(clientID, token, authUnreachable string) refusalCase {
		return refusalCase{
			connect: func(byte) attempt { return attempt{clientID: clientID, username: "unused", password: token} },
			conn:    asDevice, auth: reauth{method: "JWT", token: token}, authUnreachable: authUnreachable,
		}
	}
	noneAlg := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." +
		base64.RawURLEncoding.EncodeToString(mustJSON(t, jwt.MapClaims{"iss": w.idp.Issuer(), "sub": "alice", "exp": time.Now().Add(time.Hour).Unix()})) + "."
	mintLocal := func(sub string) string {
		tok, err := w.main.auth.LocalIssuer().Mint(sub, time.Hour, nil, authhook.TopicGrants{})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	revoked := mintLocal("revoked-user")
	if _, err := w.main.auth.Revoke(authhook.Revocation{Username: "revoked-user"}); err != nil {
		t.Fatal(err)
	}
	noMethodV3 := map[byte]string{4: "MQTT 3.1.1 has no Authentication Method"}
	clientIDFixed := "a connection's client id is fixed at CONNECT, where this was already checked"

	// CONNECT as bob with alice's token; re-authenticate alice's connection with mallory's token.
	mismatch := cred(refusal.UsernameMismatch, "bob", alice)
	mismatch.auth.token = w.user(t, "mallory", nil)

	w.main.holdV5(t, attempt{clientID: "walk-taken", password: w.user(t, "bob", nil)}) // bob's session holds the id
	taken := refusalCase{
		connect:         func(byte) attempt { return attempt{clientID: "walk-taken", username: "alice", password: alice} },
		authUnreachable: clientIDFixed,
	}

	return map[refusal.Kind]refusalCase{
		refusal.IssuerMismatch:    cred(refusal.IssuerMismatch, "alice", w.user(t, "alice", jwt.MapClaims{"iss": "https://evil.example.com"})),
		refusal.TokenExpired:      cred(refusal.TokenExpired, "alice", w.user(t, "alice", jwt.MapClaims{"exp": time.Now().Add(-time.Hour).Unix()})),
		refusal.TokenNotYetValid:  cred(refusal.TokenNotYetValid, "alice", w.user(t, "alice", jwt.MapClaims{"nbf": time.Now().Add(time.Hour).Unix()})),
		refusal.InvalidSignature:  cred(refusal.InvalidSignature, "alice", w.forged(t, w.idp.Issuer(), "k1")),
		refusal.InvalidAudience:   cred(refusal.InvalidAudience, "alice", w.user(t, "alice", jwt.MapClaims{"aud": "another-api"})),
		refusal.InvalidAZP:        cred(refusal.InvalidAZP, "alice", w.user(t, "alice", jwt.MapClaims{"azp": "https://evil.example.com"})),
		refusal.MissingClaim:      cred(refusal.MissingClaim, "alice", w.user(t, "alice", jwt.MapClaims{"org_id": nil})),
		refusal.UnknownKID:        cred(refusal.UnknownKID, "alice", w.forged(t, w.idp.Issuer(), "k-unknown")),
		refusal.Malformed:         cred(refusal.Malformed, "alice", "hunter2"),
		refusal.TokenTooLarge:     cred(refusal.TokenTooLarge, "alice", strings.Repeat("a", authhook.MaxTokenSize+1)),
		refusal.AlgNotAllowed:     cred(refusal.AlgNotAllowed, "alice", noneAlg),
		refusal.KeysUnavailable:   cred(refusal.KeysUnavailable, "alice", w.forged(t, w.deadIssuer, "k1")),
		refusal.UsernameMismatch:  mismatch,
		refusal.MissingCredential: cred(refusal.MissingCredential, "alice", ""),
		refusal.ProviderNotFound: {
			connectUnreachable: map[byte]string{5: "only the HTTP token exchange names a provider", 4: "only the HTTP token exchange names a provider"},
			authUnreachable:    "only the HTTP token exchange names a provider",
		},
		refusal.TokenRevoked:    cred(refusal.TokenRevoked, "revoked-user", revoked),
		refusal.UnknownDevice:   devCred(devicePath(walkProject, "ghost"), w.device(t, w.devKey, 0, time.Hour), clientIDFixed),
		refusal.DeviceBlocked:   devCred(devicePath(walkProject, "dev-blocked"), w.device(t, w.devKey, 0, time.Hour), clientIDFixed),
		refusal.KeyExpired:      devCred(dev1, w.device(t, w.oldKey, 0, time.Hour), ""),
		refusal.LifetimeTooLong: devCred(dev1, w.device(t, w.devKey, 0, 48*time.Hour), ""),
		refusal.IATSkew:         devCred(dev1, w.device(t, w.devKey, time.Hour, 2*time.Hour), ""),
		refusal.ProjectMismatch: devCred(devicePath("another-project", "dev-1"), w.device(t, w.devKey, 0, time.Hour), clientIDFixed),
		refusal.ClientIDTaken:   taken,
		refusal.BadAuthMethod: {
			connect:            func(byte) attempt { return attempt{clientID: "walk-method", password: alice, method: "SCRAM-SHA-1"} },
			connectUnreachable: noMethodV3,
			conn:               asAlice("walk-method-auth"), auth: reauth{method: "OAUTH2-JWT", token: alice},
		},
		refusal.AuthProtocolError: {conn: asAlice("walk-protocol"), auth: reauth{reason: 0x18, method: "JWT", token: alice}},
		refusal.NotAuthenticated:  {authUnreachable: "mochi admits no client authhook did not authenticate"},
		refusal.RateLimited: {
			on:      w.limited,
			connect: func(v byte) attempt { return attempt{clientID: fmt.Sprintf("walk-rate-v%d", v), password: "x"} },
			// The burst is 1: whatever this CONNECT's fate, the next one from the same address exceeds the rate.
			before: func(t *testing.T) { w.limited.tryV5(t, attempt{clientID: "walk-rate-spend", password: "x"}) },
		},
		refusal.ClusterUnavailable: {
			connectUnreachable: map[byte]string{
				5: "needs a cluster node cut off from its majority: e2e TestClusterNodeFailure (CONNACK 0x88, 3.1.1 0x03)",
				4: "needs a cluster node cut off from its majority: e2e TestClusterNodeFailure (CONNACK 0x88, 3.1.1 0x03)",
			},
			authUnreachable: "not a re-authentication refusal: the grace disconnect (0x9C) is proved by e2e TestClusterNodeFailure",
		},
		refusal.WillNotAuthorized: {
			connect: func(v byte) attempt {
				return attempt{clientID: fmt.Sprintf("walk-will-v%d", v), username: "alice", password: alice, will: "users/bob/will"}
			},
		},
	}
}

func mustJSON(t *testing.T, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/golang-jwt/jwt/v5"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/idmq/idmq/internal/testkit"
	"github.com/idmq/idmq/internal/testkit/wire"
)

// floodCooldown is the unknown_kid_cooldown the flood test configures: short, so the bound on refreshes
// ("one per cooldown, whatever the number of unknown kids") is exercised many times within the run.
const floodCooldown = 2 * time.Second

// floodJWKSDelay makes the key set endpoint answer like a remote IdP does, so CONNECTs pile up on a
// refresh in flight as they would in production.
const floodJWKSDelay = 100 * time.Millisecond

// floodForm is the size of the flood: the 20,000 CONNECTs over 30 s with IDMQ_FLOOD_FULL=1, a
// lighter form at a similar rate (500/s), over fewer seconds, in CI. quiet is how long valid CONNECTs are
// measured before the flood.
func floodForm() (connects int, over, quiet time.Duration) {
	if os.Getenv("IDMQ_FLOOD_FULL") != "" {
		return 20000, 30 * time.Second, 10 * time.Second
	}
	return 4000, 8 * time.Second, 5 * time.Second
}

// TestConnectFloodWithInvalidTokens: a flood of bad CONNECTs (garbage, wrong signature, unknown kid, huge
// claims) is refused CONNECT by CONNECT, each kind with its own reason; it makes the identity provider's
// key set be fetched at most once per unknown_kid_cooldown however many distinct unknown kids arrive; and
// it keeps the median latency of valid CONNECTs within 2x of the same broker's without the flood.
//
// The latency bound is checked on the production build: the race detector makes every refusal several
// times dearer (a 16 KiB claims set is parsed before its signature can be checked), so a race-enabled broker
// saturates two cores at a fraction of the rate and its latency measures the detector. The race-enabled
// build gets a quarter of the flood spread over 8 addresses (the whole flood from one address, most of which
// the limiter refuses) and every other check, and its exit code proves no data race.
//
// The per-IP limiter stays at its production default (100/s, burst 1,000). Spread over 8 source addresses
// every bad CONNECT stays under it and reaches the token check, which is the expensive case; from one
// address the limiter answers most of them before any token is looked at.
func TestConnectFloodWithInvalidTokens(t *testing.T) {
	connects, over, quiet := floodForm()
	production := buildProductionBinary(t)
	tests := []struct {
		name         string
		binary       string // "" = the race-enabled build
		sources      int    // flood source addresses 127.0.0.2 .. 127.0.0.(1+sources)
		connects     int
		checkLatency bool
	}{
		{name: "production build, 8 addresses", binary: production, sources: 8, connects: connects, checkLatency: true},
		{name: "race build, 8 addresses", sources: 8, connects: connects / 4},
		// From one address the limiter refuses all but burst + rate x time before any token work.
		{name: "race build, one address", sources: 1, connects: connects},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.binary != "" {
				useBinary(t, tt.binary)
			}
			idp := newFloodIdP(t)
			p := newIdmq(t, fmt.Sprintf(`
listeners: [{type: tcp, address: "127.0.0.1:{{tcp}}"}]
http: {address: "127.0.0.1:{{http}}"}
auth:
  unknown_kid_cooldown: %s
  providers:
    - {name: corp, type: oidc, issuer: %q, jwks_url: %q, audiences: [%q]}
acl: {rules: [{topic: "users/%%u/#", access: pubsub}]}
`, floodCooldown, idp.Issuer(), idp.JWKSURL(), floodAudience))
			p.start()
			if got := idp.Fetches(); got != 1 {
				t.Fatalf("key set fetched %d times at start, want 1", got)
			}

			before := idp.measureValidConnects(t, p, time.Now().Add(quiet))
			bad := newFloodTokens(t, idp)
			floodStart := time.Now()
			tally := make(chan floodTally, 1)
			go func() { tally <- bad.flood(p.addr("tcp"), tt.connects, over, tt.sources) }()
			during := idp.measureValidConnects(t, p, floodStart.Add(over))
			got := <-tally
			window := time.Since(floodStart)
			fetches := idp.Fetches()

			pb, pd := latencyPercentile(before, 0.50), latencyPercentile(during, 0.50)
			t.Logf("%d bad CONNECTs over %s from %d address(es): sent in %s, done in %s; answers %v",
				tt.connects, over, tt.sources, got.sendTime.Round(time.Millisecond), window.Round(time.Millisecond), got.outcomes)
			t.Logf("valid CONNECT->CONNACK: before p50 %s p99 %s (n=%d); during p50 %s p99 %s (n=%d); p50 ratio %.2f",
				pb, latencyPercentile(before, 0.99), len(before), pd, latencyPercentile(during, 0.99), len(during), float64(pd)/float64(pb))
			t.Logf("key set fetches: %d (1 at start + %d for unknown kids in %s, cooldown %s)",
				fetches, fetches-1, window.Round(time.Millisecond), floodCooldown)

			if got.accepted > 0 {
				t.Fatalf("%d bad CONNECTs were accepted", got.accepted)
			}
			if tt.checkLatency && pd > 2*pb {
				t.Errorf("valid CONNECT p50 rose from %s to %s during the flood, more than 2x", pb, pd)
			}
			// One fetch at start, then at most one per cooldown for unknown kids: the first at the first
			// unknown kid, the next no sooner than a cooldown later.
			if limit := 2 + int64(window/floodCooldown); fetches > limit {
				t.Errorf("%d key set fetches in %s with unknown_kid_cooldown %s, want at most %d", fetches, window, floodCooldown, limit)
			}
			if fetches < 2 {
				t.Errorf("%d key set fetches: the unknown kids of the flood never triggered a refresh", fetches)
			}
			limited := scrapeInt(t, p, "idmq_connect_rate_limited_total")
			reasons := scrapeAuthFailures(t, p)
			t.Logf("refusals: rate limited %d, by reason %v", limited, reasons)
			if tt.sources > 1 {
				// Under the limiter everywhere: each kind of bad token reached its own check.
				if limited != 0 {
					t.Errorf("%d CONNECTs were rate limited: the flood did not reach the token checks", limited)
				}
				for kind, reason := range floodReasons {
					if reasons[reason] < got.sent[kind] {
						t.Errorf("%d %s CONNECTs sent, idmq_auth_total{reason=%q} = %d", got.sent[kind], kind, reason, reasons[reason])
					}
				}
			} else if limited == 0 {
				t.Error("a flood from one address was never rate limited")
			}
			var refused int64
			for _, n := range reasons {
				refused += n
			}
			if refused+limited != int64(tt.connects) {
				t.Errorf("%d refused by the auth hook + %d rate limited, want the %d sent", refused, limited, tt.connects)
			}
			if code := p.stop(); code != 0 {
				t.Errorf("idmq exited %d after the flood (66 = data race)", code)
			}
		})
	}
}

// buildProductionBinary builds idmq as released (no race detector) into the test's temporary directory.
func buildProductionBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "idmq")
	build := exec.Command("go", "build", "-o", bin, "./cmd/idmq")
	build.Dir = repoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building idmq without -race: %v\n%s", err, out)
	}
	return bin
}

// useBinary makes the brokers this test starts run bin instead of the race-enabled build.
func useBinary(t *testing.T, bin string) {
	saved := idmqBin
	idmqBin = bin
	t.Cleanup(func() { idmqBin = saved })
}

const floodAudience = "mqtt://idmq"

// floodIdP is the test kit's IdP (one RS256 key, "k1"), answering key fetches floodJWKSDelay late, and
// numbering the tokens it mints so that none is ever in the broker's cache.
type floodIdP struct {
	*testkit.IdP
	jti atomic.Int64
}

func newFloodIdP(t *testing.T) *floodIdP {
	t.Helper()
	idp := &floodIdP{IdP: testkit.NewIdP(t)}
	idp.SetDelay(floodJWKSDelay)
	return idp
}

// claims are those of a token the broker accepts, for sub; extra adds to them.
func (idp *floodIdP) claims(sub string, extra map[string]any) jwt.MapClaims {
	now := time.Now()
	c := jwt.MapClaims{"iss": idp.Issuer(), "aud": floodAudience, "sub": sub, "iat": now.Unix(),
		"exp": now.Add(10 * time.Minute).Unix(), "jti": strconv.FormatInt(idp.jti.Add(1), 10)}
	for k, v := range extra {
		c[k] = v
	}
	return c
}

// measureValidConnects connects a real MQTT 5 client with a fresh valid token (never seen, so never in the
// broker's token cache) every 50 ms until end, and returns each CONNECT -> CONNACK time. A refused or
// failed valid CONNECT fails the test.
func (idp *floodIdP) measureValidConnects(t *testing.T, p *idmqProc, end time.Time) []time.Duration {
	t.Helper()
	var out []time.Duration
	for i := 0; time.Now().Before(end); i++ {
		next := time.Now().Add(50 * time.Millisecond)
		token := idp.Sign(t, idp.claims(fmt.Sprintf("valid-%d", i), nil))
		conn, err := net.DialTimeout("tcp", p.addr("tcp"), 5*time.Second)
		if err != nil {
			t.Fatalf("valid client %d: dial: %v", i, err)
		}
		c := paho.NewClient(paho.ClientConfig{Conn: conn, OnClientError: func(error) {}, AuthHandler: testkit.NoAuthExchange{}})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		start := time.Now()
		ca, err := c.Connect(ctx, &paho.Connect{ClientID: fmt.Sprintf("valid-%d", i), CleanStart: true, KeepAlive: 30,
			Properties: &paho.ConnectProperties{AuthMethod: "JWT", AuthData: []byte(token)}})
		took := time.Since(start)
		cancel()
		if err != nil {
			code := -1
			if ca != nil {
				code = int(ca.ReasonCode)
			}
			conn.Close()
			t.Fatalf("valid client %d refused (CONNACK %d): %v", i, code, err)
		}
		out = append(out, took)
		_ = c.Disconnect(&paho.Disconnect{ReasonCode: 0})
		conn.Close()
		time.Sleep(time.Until(next))
	}
	return out
}

func latencyPercentile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[int(q*float64(len(s)-1))]
}

// Kinds of bad CONNECT, and the idmq_auth_total reason each one must be refused with.
const (
	kindGarbage    = "garbage"
	kindWrongSig   = "wrong signature"
	kindUnknownKID = "unknown kid"
	kindHuge       = "huge claims under the 16 KiB cap"
	kindOverCap    = "huge claims over the 16 KiB cap"
)

var floodKinds = []string{kindGarbage, kindWrongSig, kindUnknownKID, kindHuge, kindOverCap}

var floodReasons = map[string]string{
	kindGarbage:    "malformed",
	kindWrongSig:   "invalid_signature",
	kindUnknownKID: "unknown_kid",
	kindHuge:       "invalid_signature",
	kindOverCap:    "token_too_large",
}

// floodTokens holds what the flood presents. Signatures of a few pre-signed tokens are reused: a refused
// token is never cached, so each presentation costs the broker the full check again.
type floodTokens struct {
	idp       *floodIdP
	wrongSig  []string
	huge      []string
	overCap   []string
	unknownCl string // payload.signature part of unknown-kid tokens; each gets its own random kid header
}

func newFloodTokens(t *testing.T, idp *floodIdP) *floodTokens {
	t.Helper()
	attacker := testkit.NewKey(t, "RS256", "k1") // the IdP's kid, another key: a wrong signature
	ft := &floodTokens{idp: idp}
	for i := 0; i < 16; i++ {
		ft.wrongSig = append(ft.wrongSig, attacker.Sign(t, idp.claims(fmt.Sprintf("mallory-%d", i), nil)))
	}
	// Claims padded so the token lands just under, or just over, MaxTokenSize (16 KiB).
	for _, target := range []int{16<<10 - 200, 17 << 10} {
		extra := map[string]any{}
		for j := 0; j < target/64; j++ {
			extra[fmt.Sprintf("claim_%04d", j)] = strings.Repeat("x", 16)
		}
		// One more claim fills the rest: base64 makes 3 bytes of JSON 4 bytes of token.
		probe := attacker.Sign(t, idp.claims("huge-0", extra))
		extra["pad"] = strings.Repeat("p", (target-len(probe))*3/4-8)
		for i := 0; i < 4; i++ {
			tok := attacker.Sign(t, idp.claims(fmt.Sprintf("huge-%d", i), extra))
			if target < 16<<10 {
				if len(tok) >= 16<<10 || len(tok) < 15<<10 {
					t.Fatalf("huge token is %d bytes, want just under 16 KiB", len(tok))
				}
				ft.huge = append(ft.huge, tok)
			} else {
				if len(tok) <= 16<<10 {
					t.Fatalf("over-cap token is %d bytes, want over 16 KiB", len(tok))
				}
				ft.overCap = append(ft.overCap, tok)
			}
		}
	}
	payload, err := json.Marshal(idp.claims("mallory", nil))
	if err != nil {
		t.Fatal(err)
	}
	ft.unknownCl = base64.RawURLEncoding.EncodeToString(payload) + "." + base64.RawURLEncoding.EncodeToString(floodRandom(256))
	return ft
}

func floodRandom(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// token is the credential of the i-th bad CONNECT.
func (ft *floodTokens) token(kind string, i int) []byte {
	switch kind {
	case kindGarbage:
		return floodRandom(20 + i%200)
	case kindWrongSig:
		return []byte(ft.wrongSig[i%len(ft.wrongSig)])
	case kindUnknownKID:
		header := fmt.Sprintf(`{"alg":"RS256","typ":"JWT","kid":%q}`, base64.RawURLEncoding.EncodeToString(floodRandom(12)))
		return []byte(base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + ft.unknownCl)
	case kindHuge:
		return []byte(ft.huge[i%len(ft.huge)])
	default:
		return []byte(ft.overCap[i%len(ft.overCap)])
	}
}

// floodTally is what the flood saw.
type floodTally struct {
	sent     map[string]int64 // by kind
	outcomes map[string]int64 // "CONNACK 0x86", "closed", "dial error", ...
	accepted int64
	sendTime time.Duration
}

// flood sends n bad CONNECTs to addr, evenly spread over `over`, from `sources` loopback addresses
// (127.0.0.2 and up), half MQTT 3.1.1 (token in the password) and half MQTT 5 (Authentication Data).
func (ft *floodTokens) flood(addr string, n int, over time.Duration, sources int) floodTally {
	var mu sync.Mutex
	tally := floodTally{sent: map[string]int64{}, outcomes: map[string]int64{}}
	record := func(kind, outcome string, accepted bool) {
		mu.Lock()
		defer mu.Unlock()
		tally.sent[kind]++
		tally.outcomes[outcome]++
		if accepted {
			tally.accepted++
		}
	}
	sem := make(chan struct{}, 512) // bounds sockets held at once
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < n; i++ {
		time.Sleep(time.Until(start.Add(time.Duration(i) * over / time.Duration(n))))
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			kind := floodKinds[i%len(floodKinds)]
			version := byte(4 + i%2)
			src := net.IPv4(127, 0, 0, byte(2+i%sources))
			code, err := rawConnect(addr, src, version, fmt.Sprintf("flood-%d", i), ft.token(kind, i))
			switch {
			case err == nil:
				record(kind, fmt.Sprintf("v%d CONNACK 0x%02x", version, code), code == 0)
			case errors.Is(err, errNoConnack):
				record(kind, fmt.Sprintf("v%d closed without CONNACK", version), false)
			default:
				record(kind, fmt.Sprintf("v%d %v", version, err), false)
			}
		}()
	}
	tally.sendTime = time.Since(start)
	wg.Wait()
	return tally
}

var errNoConnack = errors.New("closed without CONNACK")

// rawConnect writes one CONNECT (encoded by mochi's own packets package) from src and reads the CONNACK's
// reason code: far lighter than a full client, so the flood's cost lands on the broker, not the test.
func rawConnect(addr string, src net.IP, version byte, clientID string, token []byte) (byte, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: 5 * time.Second}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return 0, errors.New("dial error")
	}
	defer conn.Close()
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: version,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30, ClientIdentifier: clientID}}
	if version == 5 {
		pk.Properties.AuthenticationMethod = "JWT"
		pk.Properties.AuthenticationData = token
	} else {
		pk.Connect.UsernameFlag, pk.Connect.Username = true, []byte("jwt")
		pk.Connect.PasswordFlag, pk.Connect.Password = true, token
	}
	_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
	if err := wire.WritePacket(conn, &pk); err != nil {
		return 0, errors.New("write error")
	}
	ca, err := wire.ReadPacket(bufio.NewReader(conn), version)
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return 0, errors.New("no answer within 15s")
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.As(err, &ne):
		return 0, errNoConnack
	case err != nil:
		return 0, err
	case ca.FixedHeader.Type != packets.Connack:
		return 0, fmt.Errorf("packet type %d instead of CONNACK", ca.FixedHeader.Type)
	}
	return ca.ReasonCode, nil
}

// scrapeInt reads an integer sample from /metrics; a missing sample is 0.
func scrapeInt(t *testing.T, p *idmqProc, prefix string) int64 {
	t.Helper()
	v, ok := p.metric(prefix)
	if !ok {
		return 0
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		t.Fatalf("metric %s = %q: %v", prefix, v, err)
	}
	return int64(f)
}

// authFailures is idmq_auth_total{result="failure"} by reason, summed over providers.
func scrapeAuthFailures(t *testing.T, p *idmqProc) map[string]int64 {
	t.Helper()
	_, body := p.get("/metrics")
	out := map[string]int64{}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "idmq_auth_total{") || !strings.Contains(line, `result="failure"`) {
			continue
		}
		_, rest, _ := strings.Cut(line, `reason="`)
		reason, _, _ := strings.Cut(rest, `"`)
		f, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		out[reason] += int64(f)
	}
	return out
}

package authhook

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/idmq/idmq/internal/testkit"
)

// fuzzNow is the verifying hook's clock: fixed, so that the committed seeds' exp, iat and nbf stay
// meaningful and device tokens' iat skew never drifts during a run.
var fuzzNow = time.Unix(1_800_000_000, 0)

const (
	fuzzProject     = "fuzz-project"
	fuzzHMACSecret  = "fuzz-supabase-legacy-jwt-secret-of-at-least-32-chars"
	fuzzDevicePath  = "projects/" + fuzzProject + "/locations/eu/registries/r1/devices/"
	fuzzMaxErrorLen = 600 // values copied into messages are clipped to 80 bytes
)

// fuzzSigner is one real key of one provider, and what its tokens must carry.
type fuzzSigner struct {
	provider string   // the provider this signer stands for
	trusted  []string // every provider that accepts its signatures (JWKS providers share one key set)
	iss      string   // "" for device tokens
	aud      string
	method   jwt.SigningMethod
	kid      string // "" = no kid header
	key      any    // private key, or HMAC secret
	device   string // devices: the device the key belongs to
	clientID string // devices: a client id naming that device
}

func (s fuzzSigner) sign(tb testing.TB, payload []byte) string {
	header := map[string]string{"alg": s.method.Alg(), "typ": "JWT"}
	if s.kid != "" {
		header["kid"] = s.kid
	}
	h, err := json.Marshal(header)
	if err != nil {
		tb.Fatal(err)
	}
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString(h) + "." + enc.EncodeToString(payload)
	sig, err := s.method.Sign(signing, s.key)
	if err != nil {
		tb.Fatal(err)
	}
	return signing + "." + enc.EncodeToString(sig)
}

// claims are a token this signer's provider accepts at fuzzNow.
func (s fuzzSigner) claims() map[string]any {
	c := map[string]any{"iat": fuzzNow.Unix(), "exp": fuzzNow.Add(time.Hour).Unix(), "aud": s.aud}
	if s.iss != "" {
		c["iss"], c["sub"], c["jti"] = s.iss, "alice", "jti-"+s.provider
	}
	switch s.provider {
	case "oidc":
		c["org_id"], c["mqtt_topics"] = "acme", []string{"fleet/%u/#"}
	case "clerk":
		c["email"], c["https://example.com/org"] = "Alice+Admin@Example.COM", "acme"
	case "auth0":
		c["aud"] = []string{"https://api.fuzz.example", "other"}
	case "firebase":
		c["firebase"] = map[string]any{"sign_in_provider": "password"}
	case "local":
		c["attrs"], c["topics"] = map[string]string{"org": "acme"}, map[string][]string{"publish": {"a/b"}}
	case "exchange":
		c["attrs"], c["origin"] = map[string]string{"org_id": "acme"}, "oidc"
	}
	return c
}

// verifyFixture is a hook with a provider of every type, each with real keys, on a fixed clock.
type verifyFixture struct {
	h       *Hook
	signers []fuzzSigner
}

func newVerifyFixture(tb testing.TB) *verifyFixture {
	rsaKey, ecKey, edKey := testkit.NewKey(tb, "RS256", "rsa-1"), testkit.NewKey(tb, "ES256", "ec-1"), testkit.NewKey(tb, "EdDSA", "ed-1")
	devRSA, devEC := testkit.NewKey(tb, "RS256", ""), testkit.NewKey(tb, "ES256", "")
	idp := testkit.NewIdP(tb, rsaKey, ecKey, edKey)
	jwks := idp.JWKSURL()
	cfg := Config{Providers: []ProviderConfig{
		{Name: "oidc", Type: TypeOIDC, Issuer: "https://oidc.fuzz.example", JWKSURL: jwks, Audiences: []string{"mqtt"}, UsernamePrefix: "corp:",
			TopicsClaim: "mqtt_topics", Claims: []ClaimMapping{{Path: "org_id", Attribute: "org_id", Required: true}, {Path: "app_metadata.plan", Attribute: "plan", Default: "free"}}},
		{Name: "clerk", Type: TypeClerk, Issuer: "https://clerk.fuzz.example", JWKSURL: jwks,
			Claims: []ClaimMapping{{Path: "https://example.com/org", Attribute: "org"}}},
		{Name: "auth0", Type: TypeAuth0, Issuer: "https://auth0.fuzz.example/", Audience: "https://api.fuzz.example", JWKSURL: jwks},
		{Name: "supabase", Type: TypeSupabase, Issuer: "https://supabase.fuzz.example/auth/v1", JWKSURL: jwks},
		{Name: "supalegacy", Type: TypeSupabase, Issuer: "https://legacy.fuzz.example/auth/v1", JWTSecret: fuzzHMACSecret},
		{Name: "firebase", Type: TypeFirebase, Issuer: "https://firebase.fuzz.example/fuzz-proj", ProjectID: "fuzz-proj", JWKSURL: jwks,
			Claims: []ClaimMapping{{Path: "firebase.sign_in_provider", Attribute: "sign_in"}}},
		{Name: "local", Type: TypeLocal},
		{Name: "fleet", Type: TypeDevices, Project: fuzzProject, Devices: []DeviceConfig{
			{ID: "dev-1", Keys: []DeviceKey{{PEM: publicPEM(tb, devRSA)}}},
			{ID: "dev-ec", Keys: []DeviceKey{{PEM: publicPEM(tb, devEC)}}},
			{ID: "blocked-1", Blocked: true},
		}},
	}}
	h, err := New(Options{Config: cfg, DataDir: tb.TempDir(), Now: func() time.Time { return fuzzNow }, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = h.Stop() })
	waitReady(tb, h)
	jwksProviders := []string{"oidc", "clerk", "auth0", "supabase", "firebase"}
	remote := func(provider, iss, aud string, k testkit.Key) fuzzSigner {
		return fuzzSigner{provider: provider, trusted: jwksProviders, iss: iss, aud: aud, method: k.Method, kid: k.KID, key: k.Signer}
	}
	li := h.LocalIssuer()
	return &verifyFixture{h: h, signers: []fuzzSigner{
		remote("oidc", "https://oidc.fuzz.example", "mqtt", rsaKey),
		remote("clerk", "https://clerk.fuzz.example", "", ecKey),
		remote("auth0", "https://auth0.fuzz.example/", "https://api.fuzz.example", edKey),
		remote("supabase", "https://supabase.fuzz.example/auth/v1", "authenticated", rsaKey),
		{provider: "supalegacy", trusted: []string{"supalegacy"}, iss: "https://legacy.fuzz.example/auth/v1", aud: "authenticated",
			method: jwt.SigningMethodHS256, key: []byte(fuzzHMACSecret)},
		remote("firebase", "https://firebase.fuzz.example/fuzz-proj", "fuzz-proj", ecKey),
		{provider: "local", trusted: []string{"local"}, iss: li.issuer, aud: li.audience, method: li.method, kid: li.kid, key: li.signer},
		{provider: "exchange", trusted: []string{"local"}, iss: li.issuer, aud: li.audience, method: jwt.SigningMethodHS256, kid: li.exchangeKID, key: li.exchangeKey},
		{provider: "fleet", trusted: []string{"fleet"}, aud: fuzzProject, method: devRSA.Method, key: devRSA.Signer, device: "dev-1", clientID: "dev-1"},
		{provider: "fleet", trusted: []string{"fleet"}, aud: fuzzProject, method: devEC.Method, key: devEC.Signer, device: "dev-ec", clientID: fuzzDevicePath + "dev-ec"},
	}}
}

// checkRefusal: every refusal is a typed *Error with a bounded message that never repeats the token.
func checkRefusal(t *testing.T, token string, err error) {
	t.Helper()
	if ReasonOf(err) == "" {
		t.Fatalf("refused without a reason: %T %v", err, err)
	}
	msg := err.Error()
	if len(msg) > fuzzMaxErrorLen {
		t.Fatalf("error message of %d bytes: %.300q", len(msg), msg)
	}
	if len(token) > 80 && strings.Contains(msg, token) {
		t.Fatalf("error message repeats the token: %.300q", msg)
	}
}

// FuzzVerifyToken presents arbitrary bytes as the CONNECT password, with an arbitrary client id, to a
// hook with a provider of every type (oidc, the clerk/auth0/supabase/firebase presets against an
// httptest JWKS, supabase's HS256 secret, local tokens, exchanged credentials, devices). Verification
// returns a typed *Error or an Identity, never panics, and accepts only a token whose header and payload
// the fixture itself signed (seeds and their mutations cannot forge one: alg none, HS256 keyed with a
// public key, a foreign key under a known kid, a swapped signature); an accepted token gives the identity
// its signer's provider gives it, and an accepted device token names, by its client id, the device whose
// key signed it.
//
// Fixed seeds are in testdata/fuzz/FuzzVerifyToken; tokens signed with this run's keys are added here.
func FuzzVerifyToken(f *testing.F) {
	fx := newVerifyFixture(f)
	type signed struct {
		id     *Identity
		device string
	}
	genuine := map[string]signed{} // header.payload -> what accepting it must give
	attacker := testkit.NewKey(f, "RS256", "rsa-1")
	for _, s := range fx.signers {
		payload, err := json.Marshal(s.claims())
		if err != nil {
			f.Fatal(err)
		}
		token := s.sign(f, payload)
		id, err := fx.h.verify(token, "", s.clientID)
		if err != nil {
			f.Fatalf("%s: the fixture's own token is refused: %v", s.provider, err)
		}
		genuine[token[:strings.LastIndexByte(token, '.')]] = signed{id: id, device: s.device}
		f.Add(token, s.clientID)
		f.Add(token, "other-device")

		// Forgeries built from the genuine token.
		parts := strings.Split(token, ".")
		f.Add(parts[0]+"."+parts[1]+".", s.clientID)
		none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
		f.Add(none+"."+parts[1]+".", s.clientID)
		forged := s
		forged.key = attacker.Signer
		forged.method = attacker.Method
		f.Add(forged.sign(f, payload), s.clientID)
		confused := s
		confused.method, confused.key = jwt.SigningMethodHS256, attacker.PublicPEM(f)
		f.Add(confused.sign(f, payload), s.clientID)
	}
	f.Fuzz(func(t *testing.T, token, clientID string) {
		id, err := fx.h.verify(token, "", clientID)
		if err != nil {
			if id != nil {
				t.Fatalf("both an identity and an error: %+v %v", id, err)
			}
			checkRefusal(t, token, err)
			return
		}
		if id == nil {
			t.Fatal("neither an identity nor an error")
		}
		dot := strings.LastIndexByte(token, '.')
		want, ok := genuine[token[:dot]]
		if !ok {
			t.Fatalf("accepted a token the fixture never signed: %q -> %+v", token, id)
		}
		if want.device != "" {
			if name := parseDeviceClientID(clientID); name.id != want.device || id.Attributes["device_id"] != want.device {
				t.Fatalf("device %q's token accepted for client id %q as %+v", want.device, clientID, id)
			}
			return
		}
		if id.Provider != want.id.Provider || id.Username != want.id.Username || !id.ExpiresAt.Equal(want.id.ExpiresAt) ||
			!mapsEqual(id.Attributes, want.id.Attributes) || !sameGrants(id.Grants, want.id.Grants) || id.Origin != want.id.Origin {
			t.Fatalf("token accepted as %+v, its genuine identity is %+v", id, want.id)
		}
	})
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// FuzzVerifySignedClaims signs arbitrary claims with a real key of one provider (which selects it), so
// that signature checks pass and claim validation and mapping run on whatever the claims hold. Unless
// bit 0x10 of which is set, the provider's iss is put in (taken out for device tokens); with bit 0x20,
// aud, exp, iat and sub are filled in when absent, to get past validation more often. The outcome is a
// typed *Error with a bounded message, or an Identity that
//   - comes from a provider that trusts the key that signed the token;
//   - expires at the token's exp, which is in the future (within leeway), as are nbf and iat checks;
//   - carries the audience the provider requires;
//   - for identity-provider tokens, has the username, attributes and grants the mapping rules give (see
//     FuzzMapIdentity: escaped username, only mapped attribute names, claim values verbatim);
//   - for local tokens, has sub as its (topic-safe) username and attrs as attributes; an HS256 one is an
//     exchanged credential (it names its origin);
//   - for device tokens, is the device named by the client id, with aud the project, iat within the skew
//     and a lifetime within max_lifetime.
//
// Seeds are in testdata/fuzz/FuzzVerifySignedClaims.
func FuzzVerifySignedClaims(f *testing.F) {
	fx := newVerifyFixture(f)
	for i, s := range fx.signers {
		payload, err := json.Marshal(s.claims())
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(i), payload)
	}
	leeway := fx.h.ps().cfg.Leeway
	f.Fuzz(func(t *testing.T, which uint8, payload []byte) {
		s := fx.signers[int(which&0x0f)%len(fx.signers)]
		if which&0x10 == 0 {
			payload = withClaims(payload, func(c map[string]any) {
				if s.iss == "" {
					delete(c, "iss")
				} else {
					c["iss"] = s.iss
				}
				if which&0x20 != 0 {
					for k, v := range s.claims() {
						if _, ok := c[k]; !ok && (k == "aud" || k == "exp" || k == "iat" || k == "sub") {
							c[k] = v
						}
					}
				}
			})
		}
		token := s.sign(t, payload)
		clientID := s.clientID
		if clientID == "" {
			clientID = "fuzz-client"
		}
		id, err := fx.h.verify(token, "", clientID)
		if err != nil {
			checkRefusal(t, token, err)
			return
		}
		if !slices.Contains(s.trusted, id.Provider) {
			t.Fatalf("a token signed by %s's key was accepted as provider %q", s.provider, id.Provider)
		}
		claims := decodeClaims(t, payload)
		exp, ok := claims["exp"].(json.Number)
		if !ok {
			t.Fatalf("accepted without a numeric exp: %s", payload)
		}
		if v, err := strconv.ParseFloat(string(exp), 64); err != nil || v < 0 {
			t.Fatalf("accepted exp %q", exp)
		} else if v < 1e15 && id.ExpiresAt.Unix() != int64(v) {
			t.Fatalf("ExpiresAt %v, the token's exp is %s", id.ExpiresAt, exp)
		}
		if !id.ExpiresAt.Add(leeway).After(fuzzNow) {
			t.Fatalf("accepted an expired token: exp %v, now %v", id.ExpiresAt, fuzzNow)
		}
		spec := fx.h.ps().byName[id.Provider]
		switch spec.typ {
		case TypeDevices:
			checkDeviceIdentity(t, id, claims, clientID, leeway)
		case TypeLocal:
			checkLocalIdentity(t, id, claims, s)
		default:
			checkMappedIdentity(t, id, claims, spec)
		}
	})
}

// withClaims edits payload when it is a JSON object; anything else is signed as it is.
func withClaims(payload []byte, edit func(map[string]any)) []byte {
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var c map[string]any
	if dec.Decode(&c) != nil || c == nil {
		return payload
	}
	edit(c)
	out, err := json.Marshal(c)
	if err != nil {
		return payload
	}
	return out
}

func decodeClaims(t *testing.T, payload []byte) map[string]any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var c map[string]any
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("accepted a payload that is not a JSON object: %v", err)
	}
	return c
}

func audiences(c map[string]any) []string {
	switch a := c["aud"].(type) {
	case string:
		return []string{a}
	case []any:
		var out []string
		for _, v := range a {
			s, _ := v.(string)
			out = append(out, s)
		}
		return out
	}
	return nil
}

func checkMappedIdentity(t *testing.T, id *Identity, claims map[string]any, spec *providerSpec) {
	t.Helper()
	if iss, _ := claims["iss"].(string); !slices.ContainsFunc(spec.issuers, func(i issuerSpec) bool { return i.issuer == iss }) {
		t.Fatalf("accepted as %s with iss %q", spec.name, iss)
	}
	if len(spec.audiences) > 0 && !slices.ContainsFunc(audiences(claims), func(a string) bool { return slices.Contains(spec.audiences, a) }) {
		t.Fatalf("accepted as %s with aud %v, want one of %v", spec.name, claims["aud"], spec.audiences)
	}
	want, wantErr := referenceMapping(spec, claims)
	if wantErr != nil {
		t.Fatalf("accepted although the mapping refuses it (%s %q): %+v", wantErr.Reason, wantErr.Claim, id)
	}
	checkUsername(t, id.Username, spec.prefix, want.rawUsername)
	if !mapsEqual(id.Attributes, want.Attributes) || !sameGrants(id.Grants, want.Grants) || id.Subject != want.Subject {
		t.Fatalf("identity %+v; the mapping gives attributes %q, grants %+v, sub %q", id, want.Attributes, want.Grants, want.Subject)
	}
}

func checkLocalIdentity(t *testing.T, id *Identity, claims map[string]any, s fuzzSigner) {
	t.Helper()
	sub, _ := claims["sub"].(string)
	if id.Username != sub || sub == "" || !safeUsername(sub) {
		t.Fatalf("local identity username %q from sub %q", id.Username, sub)
	}
	attrs, _ := claims[localAttributesClaim].(map[string]any)
	if len(attrs) != len(id.Attributes) {
		t.Fatalf("attributes %q from attrs %v", id.Attributes, attrs)
	}
	for k, v := range attrs {
		if id.Attributes[k] != v {
			t.Fatalf("attributes %q from attrs %v", id.Attributes, attrs)
		}
	}
	if origin, _ := claims[localOriginClaim].(string); id.Origin != origin || (s.method == jwt.SigningMethodHS256 && origin == "") {
		t.Fatalf("origin %q from claim %q, signed %s", id.Origin, origin, s.method.Alg())
	}
}

func checkDeviceIdentity(t *testing.T, id *Identity, claims map[string]any, clientID string, leeway time.Duration) {
	t.Helper()
	name := parseDeviceClientID(clientID)
	if id.Attributes["device_id"] != name.id || id.Subject != name.id {
		t.Fatalf("device identity %+v for client id %q", id, clientID)
	}
	checkUsername(t, id.Username, "", name.id)
	if aud := audiences(claims); len(aud) != 1 || aud[0] != fuzzProject {
		t.Fatalf("device token accepted with aud %v", claims["aud"])
	}
	if skew := fuzzNow.Sub(id.IssuedAt); skew > defaultDeviceIATSkew || -skew > defaultDeviceIATSkew {
		t.Fatalf("device token accepted with iat %v, now %v", id.IssuedAt, fuzzNow)
	}
	if id.ExpiresAt.Sub(id.IssuedAt) > defaultDeviceMaxLifetime+leeway {
		t.Fatalf("device token accepted with lifetime %v", id.ExpiresAt.Sub(id.IssuedAt))
	}
}

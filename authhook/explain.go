package authhook

import (
	"fmt"
	"maps"
	"slices"
	"time"
)

// Explanation is what Explain found out about one credential, for an operator asking why a client cannot
// connect. It never contains the token; claim values appear only where they became the identity.
type Explanation struct {
	// Provider is the provider the token selected ("" when none was), Selection why.
	Provider  string `json:"provider,omitempty"`
	Selection string `json:"selection"`
	// Steps are the checks in the order verification ran them; the last one failed when Error is set.
	Steps []Step `json:"steps"`
	// Error is the refusal, or nil when the credential would be accepted.
	Error    *Error             `json:"-"`
	Identity *ExplainedIdentity `json:"identity,omitempty"`
	// Verified is the identity a CONNECT would attach (ClientID not set), for evaluating the ACL.
	Verified *Identity `json:"-"`
}

// Step is one verification check and its outcome.
type Step struct {
	Check  string `json:"check"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// ExplainedIdentity is the Identity the credential maps to, with where each part came from.
type ExplainedIdentity struct {
	Username string `json:"username"`
	// UsernameFrom says how the username was derived (claim, case folding, escaping, prefix).
	UsernameFrom string `json:"username_from"`
	ClientID     string `json:"client_id,omitempty"`
	// ClientIDRule says which client ids the credential may connect with.
	ClientIDRule string               `json:"client_id_rule"`
	Attributes   []ExplainedAttribute `json:"attributes"`
	Grants       TopicGrants          `json:"grants"`
	GrantsFrom   string               `json:"grants_from,omitempty"`
	Origin       string               `json:"origin,omitempty"`
	IssuedAt     time.Time            `json:"issued_at,omitzero"`
	ExpiresAt    time.Time            `json:"expires_at,omitzero"`
	// Expiry says when the connection ends (expiry + leeway).
	Expiry string `json:"expiry"`
}

// ExplainedAttribute is one attribute and its source: a claim path, a default, or what the provider derives.
type ExplainedAttribute struct {
	Name   string   `json:"name"`
	Value  string   `json:"value,omitempty"`
	Values []string `json:"values,omitempty"` // a list attribute
	Set    bool     `json:"set"`
	Source string   `json:"source"`
}

// trace collects an Explanation while the normal verification code runs. Verification passes a nil *trace
// on every CONNECT: each recording call site is guarded by `if t != nil`, so the hot path pays one
// comparison and builds no strings.
type trace struct {
	ex           Explanation
	usernameFrom string
	attrs        []ExplainedAttribute
	grantsFrom   string
	clientIDRule string
}

func (t *trace) pass(check, format string, args ...any) {
	t.ex.Steps = append(t.ex.Steps, Step{Check: check, OK: true, Detail: fmt.Sprintf(format, args...)})
}

func (t *trace) selected(provider, format string, args ...any) {
	t.ex.Provider = provider
	t.ex.Selection = fmt.Sprintf(format, args...)
}

// failedCheck names the check a refusal reason comes from.
var failedCheck = map[Reason]string{
	ReasonTokenTooLarge: "size", ReasonMalformed: "format", ReasonIssuerMismatch: "provider",
	ReasonProviderNotFound: "provider", ReasonProjectMismatch: "provider", ReasonAlgNotAllowed: "algorithm",
	ReasonUnknownKID: "key", ReasonKeysUnavailable: "key", ReasonInvalidSignature: "signature",
	ReasonKeyExpired: "signature", ReasonTokenExpired: "exp", ReasonTokenNotYetValid: "nbf/iat",
	ReasonInvalidAudience: "audience", ReasonInvalidAZP: "azp", ReasonMissingClaim: "claims",
	ReasonTokenRevoked: "revocation", ReasonUsernameMismatch: "username", ReasonUnknownDevice: "device",
	ReasonDeviceBlocked: "device", ReasonIATSkew: "iat", ReasonLifetimeTooLong: "lifetime",
	ReasonClientIDTaken: "client id", ReasonMissingCredential: "credential",
}

// Explain verifies token as a CONNECT with clientID and username would, through the same code, and
// reports every step. It bypasses the token cache (both ways), so what it shows was checked now, against
// the current keys and revocations. It changes nothing but what a CONNECT changes too (a fetch for an
// unknown kid, still rate-limited).
func (h *Hook) Explain(token, clientID, username string) *Explanation {
	t := &trace{}
	ps := h.ps()
	var id *Identity
	var err error
	if token == "" {
		err = refuse(ReasonMissingCredential, "no token")
	} else {
		id, err = h.verifyTraced(ps, token, "", clientID, t)
	}
	if err == nil {
		err = ps.checkUsername(id, []byte(username))
		if err == nil {
			t.pass("username", "%s", usernameVerdict(h, id, username))
		}
	}
	if err != nil {
		e, ok := err.(*Error)
		if !ok {
			e = refuseWrap(ReasonMalformed, err, "verification failed")
		}
		t.ex.Steps = append(t.ex.Steps, Step{Check: failedCheck[e.Reason], Detail: e.Message})
		t.ex.Error = e
		if t.ex.Selection == "" {
			t.ex.Selection = "none: " + e.Message
		}
		return &t.ex
	}
	t.ex.Identity = t.identity(h, id, clientID)
	t.ex.Verified = id
	return &t.ex
}

func (t *trace) identity(h *Hook, id *Identity, clientID string) *ExplainedIdentity {
	ei := &ExplainedIdentity{Username: id.Username, UsernameFrom: t.usernameFrom, ClientID: clientID,
		ClientIDRule: t.clientIDRule, Attributes: t.attrs, Grants: id.Grants, GrantsFrom: t.grantsFrom,
		Origin: id.Origin, IssuedAt: id.IssuedAt.UTC(), ExpiresAt: id.ExpiresAt.UTC()}
	if ei.ClientIDRule == "" {
		ei.ClientIDRule = "any client id; a persistent session's client id stays bound to its username (client_id_taken)"
	}
	if ei.Attributes == nil {
		ei.Attributes = []ExplainedAttribute{}
	}
	if id.IssuedAt.IsZero() {
		ei.IssuedAt = time.Time{}
	}
	if id.ExpiresAt.IsZero() {
		ei.Expiry = "never"
	} else {
		leeway := h.ps().cfg.Leeway
		end := id.ExpiresAt.Add(leeway)
		ei.Expiry = fmt.Sprintf("the connection ends at %s (exp + leeway %s), %s from now",
			end.UTC().Format(time.RFC3339), leeway, end.Sub(h.now()).Round(time.Second))
	}
	return ei
}

func usernameVerdict(h *Hook, id *Identity, username string) string {
	switch {
	case username == "":
		if id.Origin != "" {
			return "empty" // unreachable: checkUsername refuses it
		}
		return "CONNECT username empty: allowed, the identity comes from the token"
	case username == id.Username:
		return fmt.Sprintf("CONNECT username %q is the token's username", username)
	case h.isDeviceProvider(id.Provider):
		return fmt.Sprintf("CONNECT username %q is ignored: a device is named by its client id", clip(username))
	}
	return fmt.Sprintf("CONNECT username %q is a placeholder (auth.placeholder_usernames)", clip(username))
}

func auditWhen(t time.Time, now time.Time) string {
	d := t.Sub(now).Round(time.Second)
	if d == 0 {
		return t.UTC().Format(time.RFC3339) + " (now)"
	}
	if d > 0 {
		return fmt.Sprintf("%s (in %s)", t.UTC().Format(time.RFC3339), d)
	}
	return fmt.Sprintf("%s (%s ago)", t.UTC().Format(time.RFC3339), -d)
}

// traceLocal records, for Explain, where a local credential's identity comes from.
func traceLocal(t *trace, id *Identity) {
	t.usernameFrom = `claim "sub" as it is (idmq signed it and refused unsafe usernames)`
	src := `claim "attrs" of the local credential`
	if id.Origin != "" {
		src = fmt.Sprintf(`claim "attrs": mapped by provider %q when the token was exchanged`, id.Origin)
		t.clientIDRule = "any client id; the CONNECT username must be exactly the username (exchanged credential)"
	}
	for _, k := range slices.Sorted(maps.Keys(id.Attributes)) {
		t.attrs = append(t.attrs, ExplainedAttribute{Name: k, Value: id.Attributes[k], Set: true, Source: src})
	}
	for _, k := range slices.Sorted(maps.Keys(id.Lists)) {
		t.attrs = append(t.attrs, ExplainedAttribute{Name: k, Values: id.Lists[k], Set: true, Source: `claim "attr_lists" of the local credential`})
	}
	t.grantsFrom = `claim "topics" of the local credential`
	t.pass("claims", `"sub" is present and topic-safe`)
}

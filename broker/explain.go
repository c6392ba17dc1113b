package broker

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/idmq/idmq/aclhook"
	"github.com/idmq/idmq/authhook"
)

// ExplainRequest is what `idmq explain` and POST /v1/explain take: a credential as a client would present
// it, and the topics to decide. The token is never logged, echoed or stored.
type ExplainRequest struct {
	Token    string         `json:"token"`
	ClientID string         `json:"client_id,omitempty"`
	Username string         `json:"username,omitempty"`
	Topics   []TopicRequest `json:"topics,omitempty"`
}

// TopicRequest is one topic (a filter for subscribe) and action; Action "" asks for publish and subscribe.
type TopicRequest struct {
	Topic  string `json:"topic"`
	Action string `json:"action,omitempty"`
}

// ParseTopicRequest reads the CLI form `users/alice/#:subscribe` (or a bare topic: both actions). A topic
// may itself contain ':', so only a suffix naming an action is split off.
func ParseTopicRequest(s string) TopicRequest {
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		if _, err := aclhook.ParseAction(s[i+1:]); err == nil {
			return TopicRequest{Topic: s[:i], Action: s[i+1:]}
		}
	}
	return TopicRequest{Topic: s}
}

// Explanation is the whole answer: the authentication trace, the refusal if any, and the ACL decisions.
type Explanation struct {
	*authhook.Explanation
	Error *ExplainedError      `json:"error,omitempty"`
	ACL   *aclhook.Explanation `json:"acl,omitempty"`
}

// ExplainedError is a refusal as a client and the token exchange would see it, with what to do about it.
type ExplainedError struct {
	Code    string `json:"code"`   // the token exchange's `error` code
	Reason  string `json:"reason"` // the CONNACK Reason String and idmq_auth_total's reason label
	Message string `json:"message"`
	Fix     string `json:"fix"`
}

// Explain runs the credential through auth's verification and, when it is accepted, the identity through
// rules. Both are the code every CONNECT runs (see authhook.Hook.Explain and aclhook.Rules.Explain).
func Explain(auth *authhook.Hook, rules *aclhook.Rules, req ExplainRequest) (*Explanation, error) {
	var reqs []aclhook.Request
	for _, tr := range req.Topics {
		if tr.Topic == "" {
			return nil, fmt.Errorf("a topic is empty")
		}
		if tr.Action == "" {
			reqs = append(reqs, aclhook.Request{Topic: tr.Topic, Action: aclhook.ActionPublish},
				aclhook.Request{Topic: tr.Topic, Action: aclhook.ActionSubscribe})
			continue
		}
		act, err := aclhook.ParseAction(tr.Action)
		if err != nil {
			return nil, fmt.Errorf("topic %q: %w", tr.Topic, err)
		}
		reqs = append(reqs, aclhook.Request{Topic: tr.Topic, Action: act})
	}
	ex := &Explanation{Explanation: auth.Explain(req.Token, req.ClientID, req.Username)}
	if e := ex.Explanation.Error; e != nil {
		code, _ := exchangeError(e)
		ex.Error = &ExplainedError{Code: code, Reason: string(e.Reason), Message: strings.TrimPrefix(e.Error(), "authhook: "), Fix: fixFor(e)}
		return ex, nil
	}
	ex.ACL = rules.Explain(subjectOf(ex.Verified, req.ClientID), reqs)
	return ex, nil
}

// subjectOf is what the ACL evaluates for an identity: the one mapping, for clients and for Explain.
func subjectOf(id *authhook.Identity, clientID string) aclhook.Subject {
	return aclhook.Subject{
		Username:   id.Username,
		ClientID:   clientID,
		Attributes: id.Attributes,
		Lists:      id.Lists,
		Grants:     aclhook.Grants{Publish: id.Grants.Publish, Subscribe: id.Grants.Subscribe, All: id.Grants.All},
	}
}

// fixes are what an operator does about each refusal; the token exchange's error table in the README says
// the same for its codes.
var fixes = map[authhook.Reason]string{
	authhook.ReasonIssuerMismatch:    "compare the token's iss with the provider's issuer/domain exactly, trailing slash included",
	authhook.ReasonProviderNotFound:  "check the provider's name",
	authhook.ReasonTokenExpired:      "fetch a fresh token right before connecting or exchanging (Clerk session tokens live 60 s)",
	authhook.ReasonTokenNotYetValid:  "fix the clock of the IdP or of idmq's host (auth.leeway allows 5 s)",
	authhook.ReasonInvalidSignature:  "the token was not signed by a key of this provider: check the issuer and that the token was not altered",
	authhook.ReasonUnknownKID:        "the kid is not in the provider's key set: check jwks_url, or wait for the next refresh (POST /v1/providers/{name}/refresh)",
	authhook.ReasonAlgNotAllowed:     "sign with an algorithm listed in the provider's algorithms, or list this one",
	authhook.ReasonInvalidAudience:   "set audiences (auth0: audience) to the token's aud, or request the token for the configured audience",
	authhook.ReasonInvalidAZP:        "add the token's azp to authorized_parties",
	authhook.ReasonMissingClaim:      "add the claim to the token (e.g. email to Clerk's session token template) or change the mapping",
	authhook.ReasonMalformed:         "send the raw JWT (header.payload.signature), nothing around it",
	authhook.ReasonTokenTooLarge:     "tokens are limited to 16 KiB: drop claims the broker does not need",
	authhook.ReasonKeysUnavailable:   "the provider's keys could not be fetched: run `idmq check` and look at /readyz",
	authhook.ReasonUsernameMismatch:  "send the token's username, an empty username or a placeholder (jwt, unused); exchanged credentials need exactly mqtt_username",
	authhook.ReasonTokenRevoked:      "the credential is revoked (GET /v1/revocations): obtain a new one issued after the revocation",
	authhook.ReasonMissingCredential: "put the token in the CONNECT password or MQTT 5 Authentication Data",
	authhook.ReasonUnknownDevice:     "register the device (devices or registry_dir) under the id its client id names",
	authhook.ReasonDeviceBlocked:     "the device is blocked: remove blocked: true to let it in",
	authhook.ReasonKeyExpired:        "rotate the device's key: add its new public key with a later expires",
	authhook.ReasonLifetimeTooLong:   "have the device sign tokens whose exp - iat is at most max_lifetime",
	authhook.ReasonIATSkew:           "fix the device's clock (iat is checked against iat_skew)",
	authhook.ReasonProjectMismatch:   "the client id's project must be the project of a devices provider",
	authhook.ReasonClientIDTaken:     "use another client id: this one holds another user's session",
}

func fixFor(e *authhook.Error) string {
	if f, ok := fixes[e.Reason]; ok {
		return f
	}
	return "see the message"
}

// explain is POST /v1/explain: the running broker's keys, revocations and rules.
func (a *adminAPI) explain(w http.ResponseWriter, r *http.Request) {
	var req ExplainRequest
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || req.Token == "" {
		writeError(w, http.StatusBadRequest, "invalid_request", `body must be {"token": "...", "client_id": "...", "username": "...", "topics": [{"topic": "...", "action": "publish|subscribe"}]}`)
		return
	}
	ex, err := Explain(a.b.auth, a.b.acl.Rules(), req)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, ex)
}

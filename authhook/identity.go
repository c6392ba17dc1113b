package authhook

import "time"

// Identity is who a connection is, as proven by the credential it presented. Every way in (raw IdP JWT,
// exchanged credential, device JWT) ends in one of these; the ACL hook and the expiry scheduler read it.
// An Identity is immutable once attached: re-authentication attaches a new one.
type Identity struct {
	Username   string            // safe for topics: never contains '+', '#', '/' or control chars, never starts with '$'
	ClientID   string            // the MQTT client id the identity is bound to
	Provider   string            // name of the provider that verified the credential
	Subject    string            // the token's sub
	TokenID    string            // the token's jti, if any (revocation)
	Attributes map[string]string // mapped claims, usable as %{name} and in `when` conditions
	// Lists are mapped claims that are arrays of scalars (roles: [admin, ops]): usable in `when` conditions
	// (which hold if the list contains a listed value), never as a %{name} placeholder.
	Lists      map[string][]string
	Grants     TopicGrants // topic filters carried in the token (topics_claim)
	IssuedAt   time.Time   // the token's iat (zero if absent)
	ExpiresAt  time.Time   // the credential's expiry; zero only for anonymous identities
	AuthMethod string      // MQTT 5 Authentication Method used at CONNECT ("" = password field)
	// Origin is, for a credential minted by the token exchange, the provider that verified the IdP token it
	// was exchanged for ("" otherwise). Such a credential is bound to its username: at CONNECT the username
	// must be exactly Username, never a placeholder or empty.
	Origin      string
	ConnectedAt time.Time // when the connection authenticated; kept across re-authentication

	// facts are what Reload checks a connected client's credential against under a changed provider.
	facts credentialFacts
}

// credentialFacts are the parts of a verified token a provider's settings judge: what a reload that changes
// the issuer, the algorithms, the audiences or the authorized parties must check again.
// They are kept as the token had them (aud unconverted), so verifying costs no allocation for them.
type credentialFacts struct {
	issuer string // "" for device tokens
	alg    string // "" when unknown (anonymous): nothing to check
	aud    any    // the aud claim: a string or a list
	azp    string
}

// audiences reads the aud claim as a list.
func (f credentialFacts) audiences() []string {
	switch a := f.aud.(type) {
	case string:
		return []string{a}
	case []any:
		out := make([]string, 0, len(a))
		for _, x := range a {
			if s, ok := x.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// TopicGrants are topic filters a token grants on top of the configured rules. Placeholders are allowed.
type TopicGrants struct {
	Publish   []string
	Subscribe []string
	All       []string // publish and subscribe
}

// empty reports whether no grant is present.
func (g TopicGrants) empty() bool {
	return len(g.Publish) == 0 && len(g.Subscribe) == 0 && len(g.All) == 0
}

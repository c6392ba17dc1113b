package aclhook

// Subject is what rules are evaluated against. aclhook does not care how a client was authenticated:
// whoever embeds it supplies a SubjectFunc that returns this for a connected client.
type Subject struct {
	Username   string            // %u
	ClientID   string            // %c
	Attributes map[string]string // %{name} and `when` conditions
	// Lists are list attributes (roles: [admin, ops]): `when: {roles: admin}` holds if the list contains
	// admin, `when: {roles: [a, b]}` if it contains either. They never fill a %{name} placeholder: a rule
	// whose placeholder names a list attribute does not apply.
	Lists  map[string][]string
	Grants Grants // filters carried by the client's credential, checked after explicit denies
}

// Grants are topic filters granted by the client's credential (EMQX's `acl` claim shape).
type Grants struct {
	Publish   []string
	Subscribe []string
	All       []string
}

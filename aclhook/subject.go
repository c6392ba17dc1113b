package aclhook

// Subject is what rules are evaluated against. aclhook does not care how a client was authenticated:
// whoever embeds it supplies a SubjectFunc that returns this for a connected client.
type Subject struct {
	Username   string            // %u
	ClientID   string            // %c
	Attributes map[string]string // %{name} and `when` conditions
	Grants     Grants            // filters carried by the client's credential, checked after explicit denies
}

// Grants are topic filters granted by the client's credential (EMQX's `acl` claim shape).
type Grants struct {
	Publish   []string
	Subscribe []string
	All       []string
}

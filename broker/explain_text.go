package broker

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/idmq/idmq/authhook"
)

// WriteText renders the explanation for a terminal (`idmq explain`); POST /v1/explain answers the same as JSON.
func (e *Explanation) WriteText(w io.Writer) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	if e.Provider != "" {
		p("provider: %s", e.Provider)
	} else {
		p("provider: none")
	}
	p("  why: %s", e.Selection)
	p("verification:")
	for _, s := range e.Steps {
		verdict := "ok"
		if !s.OK {
			verdict = "FAILED"
		}
		p("  %-6s  %-10s  %s", verdict, s.Check, s.Detail)
	}
	if e.Error != nil {
		p("result: refused: %s", e.Error.Message)
		p("  error code: %s (CONNACK reason string %q)", e.Error.Code, e.Error.Reason)
		p("  fix: %s", e.Error.Fix)
		return
	}
	p("result: accepted")
	writeIdentity(p, e.Identity)
	if e.ACL == nil {
		return
	}
	p("acl rules (first match decides, no match denies):")
	for _, r := range e.ACL.Rules {
		switch {
		case r.Applies && r.Why != "":
			p("  rules[%d]  applies as %s  %s (%s)", r.Index, r.Filter, r.Rule, r.Why)
		case r.Applies:
			p("  rules[%d]  applies as %s  %s", r.Index, r.Filter, r.Rule)
		default:
			p("  rules[%d]  does not apply  %s: %s", r.Index, r.Rule, r.Why)
		}
	}
	if len(e.ACL.Rules) == 0 {
		p("  (none configured: only the credential's grants allow anything)")
	}
	for _, g := range e.ACL.IgnoredGrants {
		p("  ignored grant: %s", g)
	}
	if len(e.ACL.Topics) > 0 {
		p("topics:")
	}
	for _, t := range e.ACL.Topics {
		verdict := "DENY "
		if t.Allowed {
			verdict = "ALLOW"
		}
		p("  %s  %-9s  %s  by %s: %s", verdict, t.Action, t.Topic, t.DecidedBy, t.Detail)
	}
}

func writeIdentity(p func(string, ...any), id *authhook.ExplainedIdentity) {
	p("identity:")
	p("  username: %s", id.Username)
	p("    from: %s", id.UsernameFrom)
	if id.ClientID == "" {
		p("  client id: (none given: rules with %%c do not apply)")
	} else {
		p("  client id: %s", id.ClientID)
	}
	p("    rule: %s", id.ClientIDRule)
	if id.Origin != "" {
		p("  exchanged from a token of provider %q", id.Origin)
	}
	if len(id.Attributes) == 0 {
		p("  attributes: none")
	} else {
		p("  attributes:")
	}
	for _, a := range id.Attributes {
		if a.Values != nil {
			p("    %s = %q  (%s)", a.Name, a.Values, a.Source)
		} else if a.Set {
			p("    %s = %q  (%s)", a.Name, a.Value, a.Source)
		} else {
			p("    %s not set  (%s)", a.Name, a.Source)
		}
	}
	p("  grants: %s", grantsText(id))
	if !id.IssuedAt.IsZero() {
		p("  issued at: %s", id.IssuedAt.Format(time.RFC3339))
	}
	p("  expiry: %s", id.Expiry)
}

func grantsText(id *authhook.ExplainedIdentity) string {
	g := id.Grants
	var parts []string
	for _, l := range []struct {
		name string
		list []string
	}{{"publish", g.Publish}, {"subscribe", g.Subscribe}, {"all", g.All}} {
		if len(l.list) > 0 {
			parts = append(parts, fmt.Sprintf("%s [%s]", l.name, strings.Join(l.list, ", ")))
		}
	}
	out := "none"
	if len(parts) > 0 {
		out = strings.Join(parts, "; ")
	}
	if id.GrantsFrom != "" {
		out += " (from " + id.GrantsFrom + ")"
	}
	return out
}

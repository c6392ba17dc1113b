package aclhook

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// FuzzCompileCheck feeds arbitrary rules (placeholders, `when` conditions), subjects and requests through
// NewRules, Compile and Check, and holds them to:
//   - NewRules refuses a config only with *FieldErrors naming rules[i].<field>;
//   - Compile keeps exactly the rules and grants a reference substitution keeps, with the same filters:
//     a placeholder level of an allow rule or grant is the subject's value verbatim, and always a safe
//     literal (no '+', '#', '/', U+0000, no '$' first level the template did not write); a deny rule's
//     unsafe level becomes '+';
//   - Check returns what a slow reference decides over the compiled entries (first covering rule decides,
//     then grants, else default deny), with matching and the subset relation computed by brute force;
//   - an unsafe value never grants: whatever a subject whose values contain '+', '#', '/' or U+0000 may do,
//     the same subject with those values absent may do too.
//
// Seeds are in testdata/fuzz/FuzzCompileCheck.
func FuzzCompileCheck(f *testing.F) {
	f.Fuzz(func(t *testing.T, ruleSpec, username, clientID, attrSpec, grantSpec string, publish bool, topic string) {
		cfg := parseRuleSpec(ruleSpec)
		s := Subject{Username: username, ClientID: clientID, Attributes: parseAttrSpec(attrSpec), Grants: parseGrantSpec(grantSpec)}
		act := ActionSubscribe
		if publish {
			act = ActionPublish
		}

		r, err := NewRules(cfg)
		if err != nil {
			checkFieldErrors(t, err, len(cfg.Rules))
			return
		}
		c, errs := r.Compile(s)
		for _, e := range errs {
			if !strings.HasPrefix(e.Error(), "grants.") {
				t.Fatalf("a Compile error that names no grant: %v", e)
			}
		}
		wantRules, wantPub, wantSub := referenceCompile(t, cfg, s)
		gotRules, gotPub, gotSub := entriesOf(c.rules), entriesOf(c.pubGrants), entriesOf(c.subGrants)
		if !slices.Equal(gotRules, wantRules) || !slices.Equal(gotPub, wantPub) || !slices.Equal(gotSub, wantSub) {
			t.Fatalf("Compile(%+v) =\n rules %+v\n pub %+v\n sub %+v\nreference\n rules %+v\n pub %+v\n sub %+v", s, gotRules, gotPub, gotSub, wantRules, wantPub, wantSub)
		}
		checkNoWidening(t, cfg, s, c)

		got := c.Check(act, topic)
		if got.Source == SourceDefault && got.Allowed {
			t.Fatalf("default deny allowed %v %q", act, topic)
		}
		want, decidable := referenceDecide(c, act, topic)
		if decidable && got != want {
			t.Fatalf("Check(%v, %q) = %+v (%s); reference %+v (%s)\nrules %+v\npub %+v\nsub %+v", act, topic, got, got.Rule(), want, want.Rule(), gotRules, gotPub, gotSub)
		}

		// The same subject with every unsafe value taken away may do at least as much.
		safe, changed := withoutUnsafeValues(cfg, s)
		if !changed || !got.Allowed {
			return
		}
		c2, _ := r.Compile(safe)
		if d := c2.Check(act, topic); !d.Allowed {
			t.Fatalf("unsafe values widened access: %+v may %v %q (by %s), but without its unsafe values it may not (%s)", s, act, topic, got.Rule(), d.Rule())
		}
	})
}

// parseRuleSpec reads one rule a line: an access byte (1 publish, 2 subscribe, 3 pubsub, 4 deny, others
// invalid), the topic, then optionally "|name=v1,v2;name2=v3" conditions. At most 8 rules.
func parseRuleSpec(spec string) Config {
	var cfg Config
	for i, line := range strings.Split(spec, "\n") {
		if i == 8 || line == "" {
			break
		}
		r := Rule{Access: Access(line[0] % 6)}
		topic, when, hasWhen := strings.Cut(line[1:], "|")
		r.Topic = topic
		if hasWhen {
			r.When = map[string]OneOf{}
			for _, cond := range strings.Split(when, ";") {
				name, values, _ := strings.Cut(cond, "=")
				var list OneOf
				if values != "" {
					list = strings.Split(values, ",")
				}
				r.When[name] = list
			}
		}
		cfg.Rules = append(cfg.Rules, r)
	}
	return cfg
}

func parseAttrSpec(spec string) map[string]string {
	if spec == "" {
		return nil
	}
	m := map[string]string{}
	for _, kv := range strings.Split(spec, ";") {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

// parseGrantSpec reads "p:filter", "s:filter" or "a:filter" lines into the grant lists.
func parseGrantSpec(spec string) Grants {
	var g Grants
	for _, line := range strings.Split(spec, "\n") {
		kind, filter, ok := strings.Cut(line, ":")
		switch {
		case !ok:
		case kind == "p":
			g.Publish = append(g.Publish, filter)
		case kind == "s":
			g.Subscribe = append(g.Subscribe, filter)
		case kind == "a":
			g.All = append(g.All, filter)
		}
	}
	return g
}

func checkFieldErrors(t *testing.T, err error, rules int) {
	t.Helper()
	list := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		list = j.Unwrap()
	}
	for _, e := range list {
		var fe *FieldError
		if !errors.As(e, &fe) || !strings.HasPrefix(fe.Path, "rules[") || strings.TrimSpace(fe.Err.Error()) == "" {
			t.Fatalf("NewRules error %q is not a FieldError naming a rule", e)
		}
	}
}

// refEntry is a compiled entry in comparable form. Levels are joined with '/': a compiled level never
// contains '/' (checkNoWidening makes sure).
type refEntry struct {
	filter string
	access Access
	source Source
	index  int
}

func entriesOf(es []entry) []refEntry {
	var out []refEntry
	for _, e := range es {
		out = append(out, refEntry{filter: strings.Join(e.filter, "/"), access: e.access, source: e.source, index: e.index})
	}
	return out
}

// refLevel is one level of a template as the reference reads it: its text with placeholders filled, and
// whether it holds a placeholder; ok is false when a placeholder has no value.
func referenceFill(tmpl string, s Subject) (levels []string, placeholder []bool, ok bool) {
	for _, raw := range strings.Split(tmpl, "/") {
		var b strings.Builder
		has := false
		for i := 0; i < len(raw); i++ {
			if raw[i] != '%' {
				b.WriteByte(raw[i])
				continue
			}
			var v string
			switch raw[i+1] {
			case '%':
				b.WriteByte('%')
				i++
				continue
			case 'u':
				v = s.Username
				i++
			case 'c':
				v = s.ClientID
				i++
			case '{':
				end := i + strings.IndexByte(raw[i:], '}')
				v = s.Attributes[raw[i+2:end]]
				i = end
			}
			if v == "" {
				return nil, nil, false
			}
			has = true
			b.WriteString(v)
		}
		levels = append(levels, b.String())
		placeholder = append(placeholder, has)
	}
	return levels, placeholder, true
}

// referenceCompile is Compile written plainly from the rules it must follow.
func referenceCompile(t *testing.T, cfg Config, s Subject) (rules, pub, sub []refEntry) {
	t.Helper()
	fill := func(tmpl string, widen bool) (string, bool) {
		levels, placeholder, ok := referenceFill(tmpl, s)
		if !ok {
			return "", false
		}
		for i, l := range levels {
			if !placeholder[i] {
				continue
			}
			literalDollar := strings.HasPrefix(strings.Split(tmpl, "/")[i], "$")
			if strings.ContainsAny(l, "+#/\x00") || (i == 0 && strings.HasPrefix(l, "$") && !literalDollar) {
				if !widen {
					return "", false
				}
				levels[i] = "+"
			}
		}
		return strings.Join(levels, "/"), true
	}
	for i, r := range cfg.Rules {
		applies := true
		for name, oneOf := range r.When {
			v, ok := s.Attributes[name]
			applies = applies && ok && slices.Contains(oneOf, v)
		}
		if !applies {
			continue
		}
		if filter, ok := fill(r.Topic, r.Access == AccessDeny); ok {
			rules = append(rules, refEntry{filter: filter, access: r.Access, source: SourceRule, index: i})
		}
	}
	grant := func(list []string, src Source) {
		for i, g := range list {
			if _, err := parseTemplate(g); err != nil {
				continue
			}
			if filter, ok := fill(g, false); ok {
				e := refEntry{filter: filter, source: src, index: i}
				if src != SourceGrantSubscribe {
					pub = append(pub, e)
				}
				if src != SourceGrantPublish {
					sub = append(sub, e)
				}
			}
		}
	}
	grant(s.Grants.Publish, SourceGrantPublish)
	grant(s.Grants.Subscribe, SourceGrantSubscribe)
	grant(s.Grants.All, SourceGrantAll)
	return rules, pub, sub
}

// checkNoWidening states the safety rule on the compiled entries directly: where an allow rule or grant
// has a placeholder, the compiled level is a plain literal.
func checkNoWidening(t *testing.T, cfg Config, s Subject, c *ClientRules) {
	t.Helper()
	check := func(e entry, tmpl string) {
		tl := strings.Split(tmpl, "/")
		if len(tl) != len(e.filter) {
			t.Fatalf("%q compiled to %d levels %q, the template has %d", tmpl, len(e.filter), e.filter, len(tl))
		}
		for i, l := range e.filter {
			if !strings.Contains(tl[i], "%") || strings.Trim(tl[i], "%") == "" {
				continue // no placeholder in this level ("%%" alone is a literal)
			}
			if strings.ContainsAny(l, "+#/\x00") || (i == 0 && strings.HasPrefix(l, "$") && !strings.HasPrefix(tl[0], "$")) {
				t.Fatalf("%q filled for %+v gave the unsafe level %q: a value acts as a wildcard, separator or $-prefix", tmpl, s, l)
			}
		}
	}
	for _, e := range c.rules {
		if e.access != AccessDeny {
			check(e, cfg.Rules[e.index].Topic)
		}
	}
	for _, e := range append(slices.Clone(c.pubGrants), c.subGrants...) {
		switch e.source {
		case SourceGrantPublish:
			check(e, s.Grants.Publish[e.index])
		case SourceGrantSubscribe:
			check(e, s.Grants.Subscribe[e.index])
		case SourceGrantAll:
			check(e, s.Grants.All[e.index])
		}
	}
}

// referenceDecide decides a request over the compiled entries with brute-force matching. decidable is
// false for requests the brute force cannot afford (more than 5 levels with wildcards) or that are not
// valid MQTT filters (the broker refuses those before asking the ACL).
func referenceDecide(c *ClientRules, act Action, topic string) (d Decision, decidable bool) {
	if topic == "" {
		return Decision{Source: SourceInvalid}, true
	}
	grants := c.subGrants
	if act == ActionPublish {
		if topic[0] == '$' {
			return Decision{Source: SourceDollarTopic}, true
		}
		if strings.ContainsAny(topic, "+#") {
			return Decision{Source: SourceInvalid}, true
		}
		grants = c.pubGrants
	} else {
		if len(topic) >= 7 && strings.EqualFold(topic[:7], "$share/") {
			parts := strings.SplitN(topic, "/", 3)
			if len(parts) < 3 || parts[1] == "" || parts[2] == "" {
				return Decision{Source: SourceInvalid}, true
			}
			topic = parts[2]
		}
		if validFilter(topic) != "" {
			return Decision{}, false
		}
	}
	wild := strings.ContainsAny(topic, "+#")
	coveredBy := func(e entry) (covered, ok bool) {
		filter := strings.Join(e.filter, "/")
		if !wild {
			return referenceMatch(filter, topic), true
		}
		if len(e.filter) > 5 || strings.Count(topic, "/") > 4 {
			return false, false
		}
		return subsetByEnumeration(filter, topic), true
	}
	for _, e := range c.rules {
		covered, ok := coveredBy(e)
		if !ok {
			return Decision{}, false
		}
		if covered {
			return Decision{Allowed: e.access.grants(act), Source: SourceRule, Index: e.index}, true
		}
	}
	for _, e := range grants {
		covered, ok := coveredBy(e)
		if !ok {
			return Decision{}, false
		}
		if covered {
			return Decision{Allowed: true, Source: e.source, Index: e.index}, true
		}
	}
	return Decision{Source: SourceDefault}, true
}

// withoutUnsafeValues drops every value containing '+', '#', '/' or U+0000, except attributes a `when`
// condition reads (there the value is compared, never substituted, and may rightly grant).
func withoutUnsafeValues(cfg Config, s Subject) (Subject, bool) {
	unsafe := func(v string) bool { return strings.ContainsAny(v, "+#/\x00") }
	compared := func(name string) bool {
		return slices.ContainsFunc(cfg.Rules, func(r Rule) bool { _, ok := r.When[name]; return ok })
	}
	changed := false
	out := s
	if unsafe(out.Username) {
		out.Username, changed = "", true
	}
	if unsafe(out.ClientID) {
		out.ClientID, changed = "", true
	}
	if s.Attributes != nil {
		out.Attributes = map[string]string{}
		for k, v := range s.Attributes {
			if unsafe(v) && !compared(k) {
				changed = true
				continue
			}
			out.Attributes[k] = v
		}
	}
	return out, changed
}

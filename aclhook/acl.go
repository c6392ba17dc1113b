package aclhook

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Action is what a client asks to do with a topic or filter.
type Action uint8

const (
	ActionPublish   Action = iota + 1 // publish to a topic (also a Will topic)
	ActionSubscribe                   // subscribe to a filter, or receive a message on a topic
)

func (a Action) String() string {
	if a == ActionPublish {
		return "publish"
	}
	return "subscribe"
}

// Rules is a validated Config, parsed once; Compile turns it into one client's ClientRules.
type Rules struct {
	rules  []ruleTemplate
	config []Rule // as written, for Explain
	// limited: some rule restricts QoS or retain, so publishes are checked with them (Hook.OnPublish).
	limited bool
	// denyAction answers a 3.1.1 client's denied QoS 1/2 publish (denyaction.go); it lives here so that a
	// Reload swaps it with the rules.
	denyAction DenyAction
}

type ruleTemplate struct {
	index  int
	access Access
	limits publishLimits
	tmpl   template
	static []string // the pre-split filter when tmpl has no placeholders, shared by all clients
	when   []condition
}

type condition struct {
	attribute string
	oneOf     []string
}

// NewRules validates c (warnings are the caller's business: see Config.Validate) and parses it.
func NewRules(c Config) (*Rules, error) {
	if _, err := c.Validate(nil); err != nil {
		return nil, err
	}
	r := &Rules{rules: make([]ruleTemplate, len(c.Rules)), config: c.Rules, denyAction: c.DenyAction}
	for i, cr := range c.Rules {
		tmpl, _ := parseTemplate(cr.Topic) // Validate parsed it already
		rt := ruleTemplate{index: i, access: cr.Access, tmpl: tmpl, limits: limitsOf(cr)}
		r.limited = r.limited || rt.limits != publishLimits{}
		if !tmpl.hasPlaceholders() {
			rt.static, _ = tmpl.fill(Subject{}, false) // literal levels, with %% unescaped
		}
		for _, name := range sortedKeys(cr.When) {
			rt.when = append(rt.when, condition{attribute: name, oneOf: cr.When[name]})
		}
		r.rules[i] = rt
	}
	return r, nil
}

// Compile substitutes s into the rules and grants, dropping the rules whose conditions fail or
// whose placeholders have no safe value. The returned errors describe grants that were ignored
// because they are not valid filters; the caller logs them.
func (r *Rules) Compile(s Subject) (*ClientRules, []error) {
	return r.compile(s, nil)
}

// compile is Compile; t (Explain's, nil otherwise) records why each rule applies or not.
func (r *Rules) compile(s Subject, t *compileTrace) (*ClientRules, []error) {
	c := &ClientRules{from: r}
	for i := range r.rules {
		rt := &r.rules[i]
		if !s.satisfies(rt.when) {
			if t != nil {
				t.skip(rt.index, s.unmet(rt.when))
			}
			continue
		}
		filter := rt.static
		if filter == nil {
			// A deny rule is widened rather than dropped when a value is unsafe (see fill).
			var how substitution
			if filter, how = rt.tmpl.fill(s, rt.access == AccessDeny); filter == nil {
				if t != nil {
					t.skip(rt.index, how.String())
				}
				continue // a rule whose placeholder has no (safe) value does not apply
			}
			if t != nil && how == unsafeValue {
				t.widened(rt.index)
			}
		}
		if t != nil {
			t.apply(rt.index, filter)
		}
		e := newEntry(filter, rt.access, SourceRule, rt.index)
		e.limits = rt.limits
		c.rules = append(c.rules, e)
	}
	var errs []error
	add := func(list []string, src Source) {
		for i, f := range list {
			tmpl, err := parseTemplate(f)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", Decision{Source: src, Index: i}.Rule(), err))
				continue
			}
			filter, _ := tmpl.fill(s, false)
			if filter == nil {
				continue
			}
			e := newEntry(filter, 0, src, i)
			if src != SourceGrantSubscribe {
				c.pubGrants = append(c.pubGrants, e)
			}
			if src != SourceGrantPublish {
				c.subGrants = append(c.subGrants, e)
			}
		}
	}
	add(s.Grants.Publish, SourceGrantPublish)
	add(s.Grants.Subscribe, SourceGrantSubscribe)
	add(s.Grants.All, SourceGrantAll)
	return c, errs
}

func (s Subject) satisfies(conds []condition) bool {
	for _, c := range conds {
		if v, ok := s.Attributes[c.attribute]; ok {
			if !slices.Contains(c.oneOf, v) {
				return false
			}
			continue
		}
		if !slices.ContainsFunc(s.Lists[c.attribute], func(v string) bool { return slices.Contains(c.oneOf, v) }) {
			return false // absent, or a list without any accepted value
		}
	}
	return true
}

// ClientRules are one client's compiled rules. They are immutable, so any number of goroutines may
// Check concurrently; a nil *ClientRules denies everything.
type ClientRules struct {
	from      *Rules  // what they were compiled from: a Reload makes them stale
	rules     []entry // configured rules that apply to this client, in config order
	pubGrants []entry // credential grants allowing publish
	subGrants []entry // credential grants allowing subscribe
}

type entry struct {
	first     string // filter[0], compared before calling covers: most entries fail here
	firstKey  uint64 // levelKey(first): most mismatches are told apart without comparing strings
	firstWild bool   // filter[0] is '+' or '#'
	filter    []string
	access    Access // configured rules only; a grant's action is given by the list it is in
	limits    publishLimits
	source    Source
	index     int
}

func newEntry(filter []string, access Access, src Source, index int) entry {
	return entry{first: filter[0], firstKey: levelKey(filter[0]), firstWild: isWildcard(filter[0]), filter: filter, access: access, source: src, index: index}
}

// levelKey packs a level's length and first 7 bytes: equal levels have equal keys.
func levelKey(s string) uint64 {
	k := uint64(len(s) & 0xff)
	for i := 0; i < len(s) && i < 7; i++ {
		k |= uint64(s[i]) << (8 * (i + 1))
	}
	return k
}

// mayCover is the first-level test of covers, cheap enough to run against every entry.
func (e *entry) mayCover(req0 string, req0Key uint64, reqDollar bool) bool {
	if e.firstWild {
		return !reqDollar // [MQTT-4.7.2-1]
	}
	return e.firstKey == req0Key && e.first == req0
}

// Source says what decided a request.
type Source uint8

const (
	SourceDefault        Source = iota // nothing matched: default deny
	SourceRule                         // rules[Index]
	SourceGrantPublish                 // Grants.Publish[Index]
	SourceGrantSubscribe               // Grants.Subscribe[Index]
	SourceGrantAll                     // Grants.All[Index]
	SourceDollarTopic                  // a publish to a '$' topic: always denied
	SourceInvalid                      // an empty, wildcarded (publish) or malformed ($share) request
	SourceUnknownClient                // no compiled rules for the client
)

// Decision is the answer to one request and what produced it.
type Decision struct {
	Allowed bool
	Source  Source
	Index   int // into the config rules or the grant list named by Source
	// Limited: the rule covers the topic but not the publish's QoS or retain flag (CheckPublish).
	Limited bool
}

// Rule names what decided, for logs: "rules[3]", "grants.publish[0]", "default deny", ...
func (d Decision) Rule() string {
	switch d.Source {
	case SourceRule:
		return "rules[" + strconv.Itoa(d.Index) + "]"
	case SourceGrantPublish:
		return "grants.publish[" + strconv.Itoa(d.Index) + "]"
	case SourceGrantSubscribe:
		return "grants.subscribe[" + strconv.Itoa(d.Index) + "]"
	case SourceGrantAll:
		return "grants.all[" + strconv.Itoa(d.Index) + "]"
	case SourceDollarTopic:
		return "$-topic publish"
	case SourceInvalid:
		return "invalid request"
	case SourceUnknownClient:
		return "unknown client"
	}
	return "default deny"
}

// Check decides whether the client may perform act on topic (a topic name for publish; a filter or
// a delivered topic name for subscribe, "$share/<group>/" allowed). It takes no locks and does not
// allocate for topics of up to 32 levels.
func (c *ClientRules) Check(act Action, topic string) Decision {
	return c.check(act, topic, anyPublish)
}

// CheckPublish is Check for a publish whose QoS and retain flag are known: a rule's qos and retain
// restrictions apply too.
func (c *ClientRules) CheckPublish(topic string, qos byte, retain bool) Decision {
	return c.check(ActionPublish, topic, publishOf(qos, retain))
}

func (c *ClientRules) check(act Action, topic string, pub publishLimits) Decision {
	if c == nil {
		return Decision{Source: SourceUnknownClient}
	}
	if topic == "" {
		return Decision{Source: SourceInvalid}
	}
	grants := c.subGrants
	if act == ActionPublish {
		if topic[0] == '$' {
			return Decision{Source: SourceDollarTopic} // [issue 4] publishing to '$' topics is never allowed
		}
		if strings.IndexByte(topic, '+') >= 0 || strings.IndexByte(topic, '#') >= 0 {
			return Decision{Source: SourceInvalid} // [MQTT-3.3.2-2]
		}
		grants = c.pubGrants
	} else {
		var ok bool
		if topic, ok = stripShare(topic); !ok {
			return Decision{Source: SourceInvalid}
		}
	}
	var buf [maxStackLevels]string
	req := splitLevels(buf[:0], topic)
	req0 := req[0]
	dollar := req0 != "" && req0[0] == '$'
	key := levelKey(req0)
	for i := range c.rules {
		e := &c.rules[i]
		if e.mayCover(req0, key, dollar) && covers(e.filter, req) {
			// The first rule that covers the request decides, also when it allows another action.
			if !e.limits.permit(pub) {
				return Decision{Source: SourceRule, Index: e.index, Limited: true}
			}
			return Decision{Allowed: e.access.grants(act), Source: SourceRule, Index: e.index}
		}
	}
	for i := range grants {
		e := &grants[i]
		if e.mayCover(req0, key, dollar) && covers(e.filter, req) {
			return Decision{Allowed: true, Source: e.source, Index: e.index}
		}
	}
	return Decision{Source: SourceDefault}
}

package aclhook

import (
	"fmt"
	"strings"
)

// Explanation is how the rules apply to one subject and what they decide for some requests: what an
// operator needs to answer "why can't this client subscribe". Compile and Check produce it, the same code
// that runs for every client.
type Explanation struct {
	Rules  []RuleVerdict  `json:"rules"`
	Topics []TopicVerdict `json:"topics"`
	// IgnoredGrants are granted filters that are not valid filters: they grant nothing.
	IgnoredGrants []string `json:"ignored_grants,omitempty"`
}

// RuleVerdict is one configured rule as it applies to the subject.
type RuleVerdict struct {
	Index   int    `json:"index"`
	Rule    string `json:"rule"`
	Applies bool   `json:"applies"`
	Filter  string `json:"filter,omitempty"` // the filter after substitution, when the rule applies
	Why     string `json:"why,omitempty"`    // why it does not apply, or was widened
}

// Request is one topic (or filter, for subscribe) and action to decide.
type Request struct {
	Topic  string
	Action Action
}

// TopicVerdict is the decision for one Request.
type TopicVerdict struct {
	Topic     string `json:"topic"`
	Action    string `json:"action"`
	Allowed   bool   `json:"allowed"`
	DecidedBy string `json:"decided_by"` // "rules[2]", "grants.all[0]", "default deny", ...
	Detail    string `json:"detail"`
}

// ParseAction reads publish, subscribe, pub or sub.
func ParseAction(s string) (Action, error) {
	switch s {
	case "publish", "pub":
		return ActionPublish, nil
	case "subscribe", "sub":
		return ActionSubscribe, nil
	}
	return 0, fmt.Errorf("aclhook: unknown action %q (want publish or subscribe)", s)
}

// Explain compiles the rules for s, recording why each applies or not, and decides each request.
func (r *Rules) Explain(s Subject, reqs []Request) *Explanation {
	t := &compileTrace{ex: Explanation{Rules: make([]RuleVerdict, len(r.config)), Topics: []TopicVerdict{}}}
	for i, cr := range r.config {
		t.ex.Rules[i] = RuleVerdict{Index: i, Rule: cr.String()}
	}
	acl, errs := r.compile(s, t)
	for _, err := range errs {
		t.ex.IgnoredGrants = append(t.ex.IgnoredGrants, err.Error())
	}
	for _, req := range reqs {
		d := acl.Check(req.Action, req.Topic)
		t.ex.Topics = append(t.ex.Topics, TopicVerdict{Topic: req.Topic, Action: req.Action.String(),
			Allowed: d.Allowed, DecidedBy: d.Rule(), Detail: r.describe(d, req.Action, s)})
	}
	return &t.ex
}

// describe says in words what decided.
func (r *Rules) describe(d Decision, act Action, s Subject) string {
	switch d.Source {
	case SourceRule:
		cr := r.config[d.Index]
		if d.Limited {
			return fmt.Sprintf("the first rule covering it does not allow this QoS or retain flag: %s", cr)
		}
		if d.Allowed {
			return fmt.Sprintf("the first rule covering it: %s", cr)
		}
		if cr.Access == AccessDeny {
			return fmt.Sprintf("the first rule covering it denies: %s", cr)
		}
		return fmt.Sprintf("the first rule covering it allows %s only, and the first covering rule decides: %s", cr.Access, cr)
	case SourceGrantPublish:
		return fmt.Sprintf("granted by the credential: publish filter %q", s.Grants.Publish[d.Index])
	case SourceGrantSubscribe:
		return fmt.Sprintf("granted by the credential: subscribe filter %q", s.Grants.Subscribe[d.Index])
	case SourceGrantAll:
		return fmt.Sprintf("granted by the credential: filter %q", s.Grants.All[d.Index])
	case SourceDollarTopic:
		return "publishing to a '$' topic is always denied"
	case SourceInvalid:
		if act == ActionPublish {
			return "not a topic name (empty or with wildcards)"
		}
		return "not a valid filter"
	case SourceUnknownClient:
		return "the client is not known"
	}
	return "no rule matched: default deny"
}

// String renders a rule as in the config: `topic "users/%u/#" access pubsub when plan in [premium]`.
func (cr Rule) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "topic %q access %s", cr.Topic, cr.Access)
	for i, name := range sortedKeys(cr.When) {
		if i == 0 {
			b.WriteString(" when ")
		} else {
			b.WriteString(" and ")
		}
		fmt.Fprintf(&b, "%s in [%s]", name, strings.Join(cr.When[name], ", "))
	}
	if len(cr.QoS) > 0 {
		fmt.Fprintf(&b, " qos %v", cr.QoS)
	}
	if cr.Retain != nil {
		fmt.Fprintf(&b, " retain %t", *cr.Retain)
	}
	return b.String()
}

// compileTrace collects an Explanation while compile runs; compile gets nil for every connecting client.
type compileTrace struct {
	ex Explanation
}

func (t *compileTrace) skip(index int, why string) {
	t.ex.Rules[index].Why = why
}

func (t *compileTrace) widened(index int) {
	t.ex.Rules[index].Why = "a value is unsafe (a wildcard, '/' or a leading '$'): its level became '+', so the deny covers more"
}

func (t *compileTrace) apply(index int, filter []string) {
	t.ex.Rules[index].Applies = true
	t.ex.Rules[index].Filter = strings.Join(filter, "/")
}

// unmet names the first condition of conds that s does not satisfy.
func (s Subject) unmet(conds []condition) string {
	for _, c := range conds {
		if s.satisfies([]condition{c}) {
			continue
		}
		if v, ok := s.Attributes[c.attribute]; ok {
			return fmt.Sprintf("when %s: %q is not one of [%s]", c.attribute, v, strings.Join(c.oneOf, ", "))
		}
		if list, ok := s.Lists[c.attribute]; ok {
			return fmt.Sprintf("when %s: the list [%s] contains none of [%s]", c.attribute, strings.Join(list, ", "), strings.Join(c.oneOf, ", "))
		}
		return fmt.Sprintf("when %s: the client has no attribute %q", c.attribute, c.attribute)
	}
	return ""
}

func (sub substitution) String() string {
	switch sub {
	case missingValue:
		return "a placeholder has no value for this client: the rule does not apply"
	case unsafeValue:
		return "a placeholder's value contains '+', '#', '/' or a leading '$': the rule does not apply"
	}
	return ""
}

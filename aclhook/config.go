package aclhook

import (
	"errors"
	"fmt"
	"slices"

	"gopkg.in/yaml.v3"

	"github.com/idmq/idmq/internal/fielderr"
)

// Config is the `acl:` section of the broker's configuration.
type Config struct {
	// Rules are evaluated in order; the first that matches a request decides it. No match is a deny.
	Rules []Rule `yaml:"rules"`
	// DenyAction is what an MQTT 3.1.1 client's denied QoS 1/2 publish gets: "ignore" (the default: a
	// normal PUBACK/PUBREC, the message dropped) or "disconnect" (the connection closed). 3.1.1 has no
	// negative acknowledgement [MQTT-3.3.5-2]; MQTT 5 clients get PUBACK/PUBREC 0x87 either way.
	DenyAction DenyAction `yaml:"deny_action"`
}

// DenyAction: see Config.DenyAction. The zero value is DenyIgnore.
type DenyAction string

const (
	DenyIgnore     DenyAction = "ignore"
	DenyDisconnect DenyAction = "disconnect"
)

// ErrUnknownDenyAction: deny_action is neither ignore nor disconnect.
var ErrUnknownDenyAction = errors.New("aclhook: unknown deny_action")

func (a DenyAction) valid() bool { return a == "" || a == DenyIgnore || a == DenyDisconnect }

// Rule grants or denies one action on the topics a filter covers, for the clients whose attributes
// satisfy When.
type Rule struct {
	Topic  string           `yaml:"topic"`  // a topic filter; may contain %u, %c, %{name}, %%
	Access Access           `yaml:"access"` // publish, subscribe, pubsub or deny
	When   map[string]OneOf `yaml:"when"`   // attribute -> accepted values; all must hold
	// QoS lists the QoS levels of the publishes the rule allows (empty: any). A publish the rule covers
	// with another QoS is denied by it.
	QoS []int `yaml:"qos"`
	// Retain, when set, is the retain flag a publish the rule allows must carry: false refuses retained
	// publishes, true allows only retained ones.
	Retain *bool `yaml:"retain"`
}

// Access is what a rule allows. The zero value is not valid: every rule must say what it does.
type Access uint8

const (
	AccessPublish Access = iota + 1
	AccessSubscribe
	AccessPubSub
	AccessDeny
)

var accessNames = map[string]Access{
	"publish":   AccessPublish,
	"subscribe": AccessSubscribe,
	"pubsub":    AccessPubSub,
	"deny":      AccessDeny,
}

// ParseAccess returns the Access named s.
func ParseAccess(s string) (Access, error) {
	if a, ok := accessNames[s]; ok {
		return a, nil
	}
	return 0, fmt.Errorf("%w %q (want publish, subscribe, pubsub or deny)", ErrUnknownAccess, s)
}

func (a Access) String() string {
	for name, v := range accessNames {
		if v == a {
			return name
		}
	}
	return fmt.Sprintf("Access(%d)", uint8(a))
}

func (a Access) valid() bool { return a >= AccessPublish && a <= AccessDeny }

// grants reports whether a allows act.
func (a Access) grants(act Action) bool {
	switch a {
	case AccessPubSub:
		return true
	case AccessPublish:
		return act == ActionPublish
	case AccessSubscribe:
		return act == ActionSubscribe
	}
	return false
}

// UnmarshalYAML rejects unknown access values at decode time, with the YAML line.
func (a *Access) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := ParseAccess(s)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*a = v
	return nil
}

// MarshalYAML writes the access name, so a decoded config round-trips.
func (a Access) MarshalYAML() (any, error) { return a.String(), nil }

// OneOf is the set of values a `when` condition accepts. In YAML it is a scalar or a list of scalars.
type OneOf []string

// UnmarshalYAML accepts `plan: premium` and `plan: [premium, enterprise]`.
func (o *OneOf) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		var s string
		if err := n.Decode(&s); err != nil {
			return err
		}
		*o = OneOf{s}
		return nil
	case yaml.SequenceNode:
		var list []string
		if err := n.Decode(&list); err != nil {
			return fmt.Errorf("line %d: aclhook: a `when` condition takes a value or a list of values: %w", n.Line, err)
		}
		*o = list
		return nil
	}
	return fmt.Errorf("line %d: aclhook: a `when` condition takes a value or a list of values", n.Line)
}

var (
	ErrUnknownAccess      = errors.New("aclhook: unknown access")
	ErrUnknownPlaceholder = errors.New("aclhook: unknown placeholder")
	ErrInvalidFilter      = errors.New("aclhook: invalid topic filter")
	ErrEmptyCondition     = errors.New("aclhook: empty `when` condition")
)

// FieldError is a configuration error in one field; Path is relative to the acl section ("rules[3].topic").
// It is the same type as authhook.FieldError and broker.FieldError.
type FieldError = fielderr.FieldError

// Validate checks the section. err is a *FieldError, or errors.Join of several (each a *FieldError,
// reachable through Unwrap() []error). Warnings name a `when` condition or %{name} placeholder on an
// attribute missing from knownAttributes (the attributes some provider maps): such a rule never
// applies.
func (c Config) Validate(knownAttributes []string) (warnings []string, err error) {
	var errs []error
	for i, r := range c.Rules {
		path := fmt.Sprintf("rules[%d]", i)
		tmpl, terr := parseTemplate(r.Topic)
		if terr != nil {
			errs = append(errs, &FieldError{Path: path + ".topic", Err: terr})
		} else {
			for _, name := range tmpl.attributes() {
				if !slices.Contains(knownAttributes, name) {
					warnings = append(warnings, fmt.Sprintf("%s.topic: placeholder %%{%s} names an attribute no provider maps; the rule never applies", path, name))
				}
			}
		}
		if !r.Access.valid() {
			errs = append(errs, &FieldError{Path: path + ".access", Err: fmt.Errorf("%w: missing or invalid (want publish, subscribe, pubsub or deny)", ErrUnknownAccess)})
		}
		errs = append(errs, r.validatePublishLimits(path)...)
		for _, name := range sortedKeys(r.When) {
			if len(r.When[name]) == 0 {
				errs = append(errs, &FieldError{Path: path + ".when." + name, Err: fmt.Errorf("%w: list at least one value", ErrEmptyCondition)})
			}
			if !slices.Contains(knownAttributes, name) {
				warnings = append(warnings, fmt.Sprintf("%s.when.%s: attribute %q is not mapped by any provider; the rule never applies", path, name, name))
			}
		}
	}
	if !c.DenyAction.valid() {
		errs = append(errs, &FieldError{Path: "deny_action", Err: fmt.Errorf("%w %q (want ignore or disconnect)", ErrUnknownDenyAction, string(c.DenyAction))})
	}
	if len(c.Rules) == 0 {
		warnings = append(warnings, "rules: none configured; only filters granted by credentials are allowed")
	}
	switch len(errs) {
	case 0:
		return warnings, nil
	case 1:
		return warnings, errs[0]
	}
	return warnings, errors.Join(errs...)
}

// validatePublishLimits checks qos and retain, which restrict publishes only.
func (r Rule) validatePublishLimits(path string) []error {
	var errs []error
	if (len(r.QoS) > 0 || r.Retain != nil) && r.Access != AccessPublish && r.Access != AccessPubSub && r.Access.valid() {
		errs = append(errs, &FieldError{Path: path + ".access", Err: fmt.Errorf("qos and retain restrict publishes: access must be publish or pubsub, got %s", r.Access)})
	}
	for i, q := range r.QoS {
		if q < 0 || q > 2 || slices.Index(r.QoS, q) != i {
			errs = append(errs, &FieldError{Path: fmt.Sprintf("%s.qos[%d]", path, i), Err: fmt.Errorf("must be 0, 1 or 2, each once, got %d", q)})
		}
	}
	return errs
}

func sortedKeys(m map[string]OneOf) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// describeFilterError wraps a validFilter reason with the filter that failed.
func describeFilterError(filter, reason string) error {
	return fmt.Errorf("%w %q: %s", ErrInvalidFilter, filter, reason)
}

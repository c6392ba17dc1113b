package aclhook

import (
	"fmt"
	"strings"
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
)

// issueConfig is the example from issue 4 plus a few rules the tests need.
var issueConfig = Config{Rules: []Rule{
	{Topic: "users/%u/#", Access: AccessPubSub},                                                              // 0
	{Topic: "devices/%c/events/#", Access: AccessPublish},                                                    // 1
	{Topic: "orgs/%{org_id}/broadcast", Access: AccessSubscribe},                                             // 2
	{Topic: "#", Access: AccessPubSub, When: map[string]OneOf{"role": {"admin"}}},                            // 3
	{Topic: "premium/#", Access: AccessSubscribe, When: map[string]OneOf{"plan": {"premium", "enterprise"}}}, // 4
	{Topic: "secret/#", Access: AccessDeny},                                                                  // 5
	{Topic: "telemetry/#", Access: AccessSubscribe},                                                          // 6
	{Topic: "$SYS/broker/#", Access: AccessSubscribe, When: map[string]OneOf{"role": {"ops"}}},               // 7
}}

func mustCompile(t testing.TB, c Config, s Subject) *ClientRules {
	t.Helper()
	r, err := NewRules(c)
	if err != nil {
		t.Fatal(err)
	}
	acl, errs := r.Compile(s)
	if len(errs) > 0 {
		t.Fatalf("Compile: %v", errs)
	}
	return acl
}

func TestCheck(t *testing.T) {
	alice := Subject{Username: "alice", ClientID: "alice-phone", Attributes: map[string]string{"org_id": "acme", "plan": "free"}}
	admin := Subject{Username: "root", ClientID: "console", Attributes: map[string]string{"role": "admin"}}
	ops := Subject{Username: "ops", ClientID: "ops-1", Attributes: map[string]string{"role": "ops"}}
	premium := Subject{Username: "p", ClientID: "p-1", Attributes: map[string]string{"plan": "premium"}}
	enterprise := Subject{Username: "e", ClientID: "e-1", Attributes: map[string]string{"plan": "enterprise"}}
	device := Subject{Username: "d", ClientID: "dev-1"}
	noOrg := Subject{Username: "n", ClientID: "n-1"}
	const (
		pub = ActionPublish
		sub = ActionSubscribe
	)
	tests := []struct {
		name    string
		subject Subject
		action  Action
		topic   string
		allowed bool
		rule    string
	}{
		{"alice publishes to her topic", alice, pub, "users/alice/status", true, "rules[0]"},
		{"alice subscribes inside her tree", alice, sub, "users/alice/+/temp", true, "rules[0]"},
		{"alice subscribes to her whole tree", alice, sub, "users/alice/#", true, "rules[0]"},
		{"alice cannot subscribe to all users", alice, sub, "users/#", false, "default deny"},
		{"alice cannot subscribe to users/+", alice, sub, "users/+/status", false, "default deny"},
		{"alice cannot read bob", alice, sub, "users/bob/status", false, "default deny"},
		{"alice cannot write bob", alice, pub, "users/bob/status", false, "default deny"},
		{"alice shared subscription inside", alice, sub, "$share/g/users/alice/#", true, "rules[0]"},
		{"alice shared subscription outside", alice, sub, "$share/g/users/bob/#", false, "default deny"},
		{"malformed shared subscription", alice, sub, "$share/g", false, "invalid request"},
		{"admin writes bob", admin, pub, "users/bob/status", true, "rules[3]"},
		{"admin reads anything", admin, sub, "#", true, "rules[3]"},
		{"admin reads secrets: first match", admin, sub, "secret/x", true, "rules[3]"},
		{"admin hash does not reach $SYS", admin, sub, "$SYS/#", false, "default deny"},
		{"no one publishes to $SYS", admin, pub, "$SYS/broker/x", false, "$-topic publish"},
		{"no one publishes to other $ topics", ops, pub, "$foo", false, "$-topic publish"},
		{"ops reads $SYS by explicit rule", ops, sub, "$SYS/broker/clients/+", true, "rules[7]"},
		{"ops does not get all of $SYS", ops, sub, "$SYS/#", false, "default deny"},
		{"explicit deny", alice, sub, "secret/plans", false, "rules[5]"},
		{"premium reads premium", premium, sub, "premium/news", true, "rules[4]"},
		{"enterprise is one of", enterprise, sub, "premium/news", true, "rules[4]"},
		{"free plan is not one of", alice, sub, "premium/news", false, "default deny"},
		{"covering rule for another action denies", premium, pub, "premium/news", false, "rules[4]"},
		{"device publishes events", device, pub, "devices/dev-1/events/temp", true, "rules[1]"},
		{"device cannot subscribe to its events", device, sub, "devices/dev-1/events/temp", false, "rules[1]"},
		{"device cannot publish as another", device, pub, "devices/dev-2/events/temp", false, "default deny"},
		{"org broadcast", alice, sub, "orgs/acme/broadcast", true, "rules[2]"},
		{"other org broadcast", alice, sub, "orgs/other/broadcast", false, "default deny"},
		{"rule without a value does not apply", noOrg, sub, "orgs/acme/broadcast", false, "default deny"},
		{"read-only telemetry", alice, pub, "telemetry/x", false, "rules[6]"},
		{"wildcard in a topic name", admin, pub, "a/+", false, "invalid request"},
		{"empty topic", admin, pub, "", false, "invalid request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := mustCompile(t, issueConfig, tt.subject).Check(tt.action, tt.topic)
			if d.Allowed != tt.allowed || d.Rule() != tt.rule {
				t.Errorf("Check(%v, %q) = allowed %v by %s; want %v by %s", tt.action, tt.topic, d.Allowed, d.Rule(), tt.allowed, tt.rule)
			}
		})
	}
}

func TestCheckGrants(t *testing.T) {
	listShape := Grants{All: []string{"fleet/%u/#", "shared/+/status"}}
	objectShape := Grants{Publish: []string{"in/%c"}, Subscribe: []string{"out/%c/#"}, All: []string{"both/%{site}"}}
	attrs := map[string]string{"site": "berlin"}
	tests := []struct {
		name    string
		grants  Grants
		action  Action
		topic   string
		allowed bool
		rule    string
	}{
		{"list shape publishes", listShape, ActionPublish, "fleet/truck/gps", true, "grants.all[0]"},
		{"list shape subscribes", listShape, ActionSubscribe, "fleet/truck/+", true, "grants.all[0]"},
		{"list shape second filter", listShape, ActionSubscribe, "shared/x/status", true, "grants.all[1]"},
		{"list shape outside", listShape, ActionSubscribe, "fleet/#", false, "default deny"},
		{"object pub publishes", objectShape, ActionPublish, "in/truck-1", true, "grants.publish[0]"},
		{"object pub does not subscribe", objectShape, ActionSubscribe, "in/truck-1", false, "default deny"},
		{"object sub subscribes", objectShape, ActionSubscribe, "out/truck-1/cmd", true, "grants.subscribe[0]"},
		{"object sub does not publish", objectShape, ActionPublish, "out/truck-1/cmd", false, "default deny"},
		{"object all with attribute", objectShape, ActionPublish, "both/berlin", true, "grants.all[0]"},
		{"grant cannot override deny", Grants{All: []string{"secret/#"}}, ActionSubscribe, "secret/x", false, "rules[5]"},
		{"grant cannot override a rule for another action", Grants{Publish: []string{"telemetry/#"}}, ActionPublish, "telemetry/x", false, "rules[6]"},
		{"configured rule answers first", Grants{All: []string{"users/#"}}, ActionSubscribe, "users/truck/x", true, "rules[0]"},
		{"grant hash does not reach $SYS", Grants{Subscribe: []string{"#"}}, ActionSubscribe, "$SYS/broker/x", false, "default deny"},
		{"explicit $SYS grant", Grants{Subscribe: []string{"$SYS/#"}}, ActionSubscribe, "$SYS/broker/x", true, "grants.subscribe[0]"},
		{"grant cannot publish to $", Grants{Publish: []string{"$SYS/#"}}, ActionPublish, "$SYS/broker/x", false, "$-topic publish"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := Subject{Username: "truck", ClientID: "truck-1", Attributes: attrs, Grants: tt.grants}
			d := mustCompile(t, issueConfig, s).Check(tt.action, tt.topic)
			if d.Allowed != tt.allowed || d.Rule() != tt.rule {
				t.Errorf("Check(%v, %q) = allowed %v by %s; want %v by %s", tt.action, tt.topic, d.Allowed, d.Rule(), tt.allowed, tt.rule)
			}
		})
	}
}

func TestCompileReportsInvalidGrants(t *testing.T) {
	r, err := NewRules(Config{})
	if err != nil {
		t.Fatal(err)
	}
	acl, errs := r.Compile(Subject{Username: "u", Grants: Grants{
		Publish:   []string{"a/#/b", "ok/%u"},
		Subscribe: []string{"%x/y", ""},
	}})
	var msgs []string
	for _, e := range errs {
		msgs = append(msgs, e.Error())
	}
	want := []string{
		`grants.publish[0]: aclhook: invalid topic filter "a/#/b": '#' must be a whole level and the last one`,
		`grants.subscribe[0]: aclhook: unknown placeholder "%x" in "%x/y" (want %u, %c, %{name} or %%)`,
		`grants.subscribe[1]: aclhook: invalid topic filter "": empty filter`,
	}
	if strings.Join(msgs, "\n") != strings.Join(want, "\n") {
		t.Errorf("errors\n%s\nwant\n%s", strings.Join(msgs, "\n"), strings.Join(want, "\n"))
	}
	if d := acl.Check(ActionPublish, "ok/u"); !d.Allowed {
		t.Errorf("the valid grant was dropped with the invalid ones: %v", d.Rule())
	}
}

func TestCheckInjection(t *testing.T) {
	deviceRules := Config{Rules: []Rule{
		{Topic: "devices/%c/config", Access: AccessDeny},
		{Topic: "devices/#", Access: AccessPubSub},
		{Topic: "users/%u/#", Access: AccessPubSub},
	}}
	tests := []struct {
		name    string
		subject Subject
		action  Action
		topic   string
		allowed bool
		rule    string
	}{
		{"username a/# gets no tree", Subject{Username: "a/#", ClientID: "c"}, ActionSubscribe, "users/a/#", false, "default deny"},
		{"username a/# gets no users/#", Subject{Username: "a/#", ClientID: "c"}, ActionSubscribe, "users/#", false, "default deny"},
		{"username a/# cannot write users/a/x", Subject{Username: "a/#", ClientID: "c"}, ActionPublish, "users/a/x", false, "default deny"},
		{"username + gets nothing", Subject{Username: "+", ClientID: "c"}, ActionPublish, "users/bob/x", false, "default deny"},
		{"username # gets nothing", Subject{Username: "#", ClientID: "c"}, ActionSubscribe, "users/#", false, "default deny"},
		{"client id + widens the deny", Subject{Username: "u", ClientID: "+"}, ActionPublish, "devices/dev-9/config", false, "rules[0]"},
		{"client id # widens the deny", Subject{Username: "u", ClientID: "#"}, ActionSubscribe, "devices/+/config", false, "rules[0]"},
		{"honest client: own config denied", Subject{Username: "u", ClientID: "dev-1"}, ActionPublish, "devices/dev-1/config", false, "rules[0]"},
		{"honest client: others' config allowed", Subject{Username: "u", ClientID: "dev-1"}, ActionPublish, "devices/dev-9/config", true, "rules[1]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := mustCompile(t, deviceRules, tt.subject).Check(tt.action, tt.topic)
			if d.Allowed != tt.allowed || d.Rule() != tt.rule {
				t.Errorf("Check(%v, %q) = allowed %v by %s; want %v by %s", tt.action, tt.topic, d.Allowed, d.Rule(), tt.allowed, tt.rule)
			}
		})
	}
	// client id "+" on an allow rule: devices/%c/events/# must not become devices/+/events/#.
	d := mustCompile(t, issueConfig, Subject{Username: "u", ClientID: "+"}).Check(ActionPublish, "devices/x/events/1")
	if d.Allowed {
		t.Errorf("client id + published to another device's events by %s", d.Rule())
	}
}

func TestCheckUnknownClient(t *testing.T) {
	var acl *ClientRules
	if d := acl.Check(ActionSubscribe, "a"); d.Allowed || d.Rule() != "unknown client" {
		t.Errorf("nil rules: allowed %v by %s", d.Allowed, d.Rule())
	}
}

func TestCheckDoesNotAllocate(t *testing.T) {
	acl, topics := benchRules(t)
	for _, tc := range topics {
		allocs := testing.AllocsPerRun(100, func() { acl.Check(tc.action, tc.topic) })
		if allocs != 0 {
			t.Errorf("Check(%v, %q) allocates %v times", tc.action, tc.topic, allocs)
		}
	}
}

type benchCase struct {
	name    string
	action  Action
	topic   string
	allowed bool
}

// benchRules compiles 20 configured rules and 10 grants, all applying to the subject, and returns
// requests that stop at the first rule, at the last grant, and at the default deny.
func benchRules(t testing.TB) (*ClientRules, []benchCase) {
	var c Config
	for i := range 18 {
		c.Rules = append(c.Rules, Rule{Topic: fmt.Sprintf("app%d/%%u/+/data/#", i), Access: AccessPubSub})
	}
	c.Rules = append(c.Rules,
		Rule{Topic: "orgs/%{org}/broadcast", Access: AccessSubscribe, When: map[string]OneOf{"role": {"user", "admin"}}},
		Rule{Topic: "secret/#", Access: AccessDeny},
	)
	var g Grants
	for i := range 10 {
		g.All = append(g.All, fmt.Sprintf("fleet%d/%%c/+/telemetry", i))
	}
	s := Subject{Username: "alice", ClientID: "truck-17", Attributes: map[string]string{"org": "acme", "role": "user"}, Grants: g}
	acl := mustCompile(t, c, s)
	cases := []benchCase{
		{"first rule", ActionPublish, "app0/alice/phone/data/temp", true},
		{"last grant", ActionPublish, "fleet9/truck-17/engine/telemetry", true},
		{"subscribe last grant", ActionSubscribe, "fleet9/truck-17/+/telemetry", true},
		{"default deny", ActionSubscribe, "fleet9/truck-18/engine/telemetry", false},
	}
	for _, tc := range cases {
		if d := acl.Check(tc.action, tc.topic); d.Allowed != tc.allowed {
			t.Fatalf("%s: allowed %v by %s", tc.name, d.Allowed, d.Rule())
		}
	}
	return acl, cases
}

// BenchmarkCheck measures one decision against 20 rules + 10 grants. BenchmarkMochiLedger is the
// baseline: mochi's own auth ledger with the same 30 filters for the same requests.
func BenchmarkCheck(b *testing.B) {
	acl, cases := benchRules(b)
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				acl.Check(tc.action, tc.topic)
			}
		})
	}
}

func BenchmarkMochiLedger(b *testing.B) {
	_, cases := benchRules(b)
	filters := auth.Filters{}
	for i := range 18 {
		filters[auth.RString(fmt.Sprintf("app%d/alice/+/data/#", i))] = auth.ReadWrite
	}
	filters["orgs/acme/broadcast"] = auth.ReadOnly
	for i := range 10 {
		filters[auth.RString(fmt.Sprintf("fleet%d/truck-17/+/telemetry", i))] = auth.ReadWrite
	}
	ledger := &auth.Ledger{ACL: auth.ACLRules{{Filters: filters}}}
	cl := &mqtt.Client{ID: "truck-17"}
	cl.Properties.Username = []byte("alice")
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				ledger.ACLOk(cl, tc.topic, tc.action == ActionPublish)
			}
		})
	}
}

// TestListAttributes: `when` holds if a list attribute contains an accepted value; a list never fills a
// placeholder, so such a rule does not apply.
func TestListAttributes(t *testing.T) {
	cfg := Config{Rules: []Rule{
		{Topic: "ops/#", Access: AccessPubSub, When: map[string]OneOf{"roles": {"ops"}}},
		{Topic: "billing/#", Access: AccessSubscribe, When: map[string]OneOf{"roles": {"finance", "admin"}}},
		{Topic: "teams/%{roles}/#", Access: AccessPubSub},
	}}
	tests := []struct {
		name  string
		roles []string
		topic string
		want  bool
	}{
		{"contains the value", []string{"dev", "ops"}, "ops/deploy", true},
		{"contains one of the values", []string{"admin"}, "billing/invoices", true},
		{"contains none", []string{"dev"}, "billing/invoices", false},
		{"empty list", []string{}, "ops/deploy", false},
		{"a list is no placeholder value", []string{"ops"}, "teams/ops/chat", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			acl := mustCompile(t, cfg, Subject{Username: "u", Lists: map[string][]string{"roles": tt.roles}})
			if d := acl.Check(ActionSubscribe, tt.topic); d.Allowed != tt.want {
				t.Fatalf("subscribe %s with roles %v: %+v, want allowed=%v", tt.topic, tt.roles, d, tt.want)
			}
		})
	}
}

// TestPublishLimits: a rule's qos and retain restrict the publishes it allows; Check (QoS unknown) is not
// restricted, CheckPublish is; the limits are refused on rules that allow no publish.
func TestPublishLimits(t *testing.T) {
	no := false
	cfg := Config{Rules: []Rule{
		{Topic: "telemetry/#", Access: AccessPublish, QoS: []int{0, 1}, Retain: &no},
		{Topic: "state/#", Access: AccessPubSub, QoS: []int{1}},
	}}
	acl := mustCompile(t, cfg, Subject{Username: "u"})
	tests := []struct {
		topic  string
		qos    byte
		retain bool
		want   bool
	}{
		{"telemetry/t1", 0, false, true},
		{"telemetry/t1", 1, false, true},
		{"telemetry/t1", 2, false, false},
		{"telemetry/t1", 1, true, false},
		{"state/s1", 1, true, true},
		{"state/s1", 0, false, false},
	}
	for _, tt := range tests {
		d := acl.CheckPublish(tt.topic, tt.qos, tt.retain)
		if d.Allowed != tt.want || d.Index != 0 && tt.topic == "telemetry/t1" {
			t.Errorf("publish %s qos %d retain %v: %+v, want allowed=%v", tt.topic, tt.qos, tt.retain, d, tt.want)
		}
	}
	if d := acl.Check(ActionPublish, "telemetry/t1"); !d.Allowed {
		t.Errorf("Check without QoS: %+v, want allowed", d)
	}
	if d := acl.Check(ActionSubscribe, "state/s1"); !d.Allowed {
		t.Errorf("subscribe under a qos-limited pubsub rule: %+v, want allowed", d)
	}
	bad := Config{Rules: []Rule{{Topic: "a", Access: AccessSubscribe, QoS: []int{1}}, {Topic: "b", Access: AccessPublish, QoS: []int{3, 1, 1}}}}
	_, err := bad.Validate(nil)
	for _, want := range []string{"rules[0].access: qos and retain restrict publishes", "rules[1].qos[0]: must be 0, 1 or 2", "rules[1].qos[2]: must be 0, 1 or 2"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate: %v, want %q", err, want)
		}
	}
}

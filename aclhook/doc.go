// Package aclhook is idmq's topic ACL: a mochi-mqtt hook that compiles each client's rules once at
// CONNECT and answers every publish, subscribe and delivery without locks or allocations.
//
// # Evaluation
//
// A request is an action (publish, or subscribe/receive) on a topic. It is decided by the first of
// these that matches, in this order:
//
//  1. A publish to a topic starting with '$' is denied, whatever the rules say.
//  2. The configured rules, in order. A rule matches when its `when` conditions hold for the client
//     and its filter covers the request: a published topic matches the filter; a SUBSCRIBE filter
//     (with "$share/<group>/" stripped) is a subset of it, so users/alice/+/temp is inside
//     users/alice/#, and users/# is not. The first matching rule decides: it allows the request if
//     its access includes the action, and otherwise denies it. So a `deny` rule, and equally a
//     `subscribe` rule asked for a publish, ends the evaluation: credentials cannot override what an
//     operator wrote for a topic.
//  3. The credential's grants (Subject.Grants), consulted only when no configured rule matched:
//     any grant for the action covering the request allows it. Grants only allow.
//  4. Otherwise the request is denied. There is no default-allow switch.
//
// Delivering a message to a subscriber is a subscribe check of the topic name, so a message on a
// topic a client may not read is never delivered, retained or not, even when the client's filter
// was allowed (e.g. "#" with a `deny` rule on secret/#).
//
// # Placeholders
//
// %u (username), %c (client id), %{name} (attribute name) and %% (a literal '%') may appear in rule
// topics and in granted filters. A rule whose placeholder has no value (empty or absent) does not
// apply. A value containing '+', '#', '/' or U+0000, or putting '$' at the start of the first level,
// never acts as such: an allow rule or grant with such a value does not apply, and a deny rule has
// that level widened to '+', so a crafted client id can make a deny rule deny more but never skip it.
//
// # '$' topics
//
// Filters starting with a wildcard never cover '$' topics [MQTT-4.7.2-1], so subscribing to $SYS/#
// needs a rule (or grant) whose first level is literally $SYS.
//
// # Lifecycle
//
// OnConnect compiles the rules (conditions evaluated, placeholders substituted, filters split) and
// refuses a Will topic the client may not publish to with CONNACK 0x87 (v3: 0x05). The compiled
// rules are dropped when the session ends: at disconnect for clean sessions, at expiry or takeover
// for persistent ones, whose offline deliveries mochi still checks. Refresh recompiles after
// re-authentication.
package aclhook

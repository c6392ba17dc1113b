package aclhook

import mqtt "github.com/mochi-mqtt/server/v2"

// Reload puts cfg's rules in force and recompiles the rules of every client the hook knows (connected, and
// persistent sessions it checks deliveries for) at once, so the next publish, subscribe or delivery is
// decided by the new rules. An invalid cfg changes nothing. Rules compiled under the old rules by a CONNECT
// racing the reload are recompiled when first used (ClientRules remember what they were compiled from).
//
// What the new rules take away takes effect on the next request: a publish is refused, and an existing
// subscription the client may no longer hold stays registered in mochi but delivers nothing (every delivery
// is checked); retained messages are not sent again. A Will topic is checked again at the next CONNECT or
// re-authentication, not at a reload.
func (h *Hook) Reload(cfg Config) error {
	rules, err := NewRules(cfg)
	if err != nil {
		return err
	}
	h.rules.Store(rules)
	h.clients.Range(func(k, v any) bool {
		h.recompile(k.(*mqtt.Client), v.(*ClientRules))
		return true
	})
	return nil
}

// recompile replaces the client's stale rules unless another goroutine did first, and returns what is in force.
func (h *Hook) recompile(cl *mqtt.Client, stale *ClientRules) *ClientRules {
	acl := h.compile(cl)
	if acl == nil {
		h.clients.CompareAndDelete(cl, stale)
		return nil
	}
	if !h.clients.CompareAndSwap(cl, stale, acl) {
		if v, ok := h.clients.Load(cl); ok {
			return v.(*ClientRules)
		}
	}
	return acl
}

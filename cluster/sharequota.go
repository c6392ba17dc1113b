package cluster

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Every distinct $share/<group>/<filter> is a durable JetStream consumer replicated cluster-wide, so how
// many a node creates is bounded: a subscription that would make this node hold more than shareMaxGroups
// groups, or its client a member of more than shareMaxClientGroups groups, is refused with 0x97 Quota exceeded
// (MQTT 3.1.1: 0x80). The bounds count what this node holds: a group stays counted until its last member's
// pull requests ended (up to shareFetchWait after it left). A session resumed or taken over keeps the
// memberships it had; only new subscriptions are refused.
//
// mochi (v2.7.9) lets no hook refuse one filter of a SUBSCRIBE: admit (OnSubscribe, before mochi's checks)
// empties the refused filter, so mochi itself subscribes nothing and answers 0x8F Topic Filter invalid, and
// marks it with 0x97 in the packet's (otherwise unused) ReasonCodes; OnSubscribed turns the 0x8F into 0x97 in
// the reason codes mochi then writes as the SUBACK. Should mochi stop sharing that slice with the hooks, the
// client sees 0x8F: still a refusal.
const (
	shareMaxGroups       = 1000 // distinct group+filter pairs a node holds members of
	shareMaxClientGroups = 16   // groups one client is a member of
)

// admit refuses, in a SUBSCRIBE, each new shared subscription beyond the bounds, and reserves a place for
// each new group it lets through until the client joins it (subscribed), so that concurrent SUBSCRIBEs
// cannot together exceed shareMaxGroups. A filter mochi refuses anyway (invalid, No Local, the ACL) is
// left to mochi, which answers it with its own code.
func (s *sharing) admit(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if cl.Net.Inline {
		return pk
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	held := map[shareKey]bool{}
	if sc := s.clients[cl]; sc != nil {
		for _, m := range sc.members {
			held[m.g.key] = true
		}
	}
	var reserved []shareKey
	refused := false
	for i, f := range pk.Filters {
		group, topicFilter, ok := splitShared(f.Filter)
		key := shareKey{group, topicFilter}
		if !ok || held[key] || f.NoLocal || !mqtt.IsValidFilter(f.Filter, false) ||
			(s.readAllowed != nil && !s.readAllowed(cl, f.Filter, false)) {
			continue
		}
		isNew := s.groups[key] == nil && s.pending[key] == 0
		if len(held) >= s.maxClientGroups || (isNew && len(s.groups)+len(s.pending) >= s.maxGroups) {
			if !refused { // the packet's Filters may be shared with the hooks before this one
				pk.Filters = append(packets.Subscriptions(nil), pk.Filters...)
				pk.ReasonCodes = make([]byte, len(pk.Filters))
				refused = true
			}
			// Debug: a client retrying its SUBSCRIBE would otherwise write the log; its SUBACK says 0x97.
			s.log.Debug("cluster: shared subscription refused: quota exceeded", "client", cl.ID, "filter", f.Filter,
				"client_groups", len(held), "node_groups", len(s.groups)+len(s.pending))
			pk.Filters[i].Filter = "" // mochi answers an invalid filter and subscribes nothing
			pk.ReasonCodes[i] = packets.ErrQuotaExceeded.Code
			continue
		}
		held[key] = true
		if s.groups[key] == nil {
			s.pending[key]++
			reserved = append(reserved, key)
		}
	}
	if len(reserved) > 0 {
		s.reserved[cl] = reserved
	}
	return pk
}

// refusedCodes gives the filters admit refused their code, in the reason codes mochi sends as the SUBACK.
func refusedCodes(cl *mqtt.Client, pk packets.Packet, reasonCodes []byte) {
	if cl.Properties.ProtocolVersion < 5 { // mochi already answered 0x80, MQTT 3.1.1's only failure
		return
	}
	for i, c := range pk.ReasonCodes {
		if c == packets.ErrQuotaExceeded.Code && i < len(reasonCodes) && reasonCodes[i] == packets.ErrTopicFilterInvalid.Code {
			reasonCodes[i] = c
		}
	}
}

// unreserve ends the reservations admit made for cl's SUBSCRIBE, once mochi processed it (the groups joined).
func (s *sharing) unreserve(cl *mqtt.Client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, key := range s.reserved[cl] {
		if s.pending[key]--; s.pending[key] <= 0 {
			delete(s.pending, key)
		}
	}
	delete(s.reserved, cl)
}

package cluster

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/mochi-mqtt/server/v2/packets"
)

// The record of a persistent session in idmq-sessions, and how a node writes it.

// sessionRecord is a persistent session as idmq-sessions holds it (JSON, key ClientKey(client id)).
type sessionRecord struct {
	Client       string       `json:"client"`
	User         string       `json:"user"` // only the same identity resumes it, as for a takeover
	Node         string       `json:"node"` // the node that wrote it
	Protocol     byte         `json:"protocol"`
	Expiry       uint32       `json:"expiry"` // session expiry interval, seconds
	Cursor       uint64       `json:"cursor"`
	Subs         []sessionSub `json:"subs"`
	Updated      int64        `json:"updated"`                // unix seconds of the write
	Disconnected int64        `json:"disconnected,omitempty"` // unix seconds; 0 while connected

	qos2 []*qos2Entry // its QoS 2 deliveries in flight (idmq-qos2), read with it on resume
}

type sessionSub struct {
	Filter            string `json:"filter"`
	QoS               byte   `json:"qos"`
	NoLocal           bool   `json:"no_local,omitempty"`
	RetainAsPublished bool   `json:"rap,omitempty"`
	RetainHandling    byte   `json:"rh,omitempty"`
	Identifier        int    `json:"id,omitempty"`
}

// write stores s's record if this node still owns the client (a node that lost it must not overwrite the
// new owner's record). disconnected is the unix time the client left, 0 while connected.
func (m *sessions) write(s *session, disconnected int64) {
	if !m.h.owners.owns(s.cl) {
		return
	}
	s.mu.Lock()
	rec := sessionRecord{Client: s.cl.ID, User: s.user, Node: m.c.cfg.Node, Protocol: s.cl.Properties.ProtocolVersion,
		Expiry: m.expiryOf(s.cl), Cursor: s.cursor, Updated: m.c.opts.Now().Unix(), Disconnected: disconnected}
	coverAt := s.coverAt
	for _, sub := range s.subs {
		rec.Subs = append(rec.Subs, recordSub(sub))
	}
	s.dirty = false
	s.mu.Unlock()
	v, _ := json.Marshal(rec)
	ctx, cancel := context.WithTimeout(context.Background(), m.c.opts.OpTimeout)
	defer cancel()
	if _, err := m.c.b.sessions.Put(ctx, ClientKey(s.cl.ID), v); err != nil {
		s.mu.Lock()
		s.dirty = true // the flush loop tries again
		s.mu.Unlock()
		m.log.Warn("cluster: session not stored", "client", s.cl.ID, "err", fmt.Errorf("cluster: %w", err))
		return
	}
	m.qos2Covered(s, rec.Cursor, coverAt)
}

func recordSub(sub packets.Subscription) sessionSub {
	return sessionSub{Filter: sub.Filter, QoS: sub.Qos, NoLocal: sub.NoLocal, RetainAsPublished: sub.RetainAsPublished,
		RetainHandling: sub.RetainHandling, Identifier: sub.Identifier}
}

func (r sessionSub) subscription() packets.Subscription {
	return packets.Subscription{Filter: r.Filter, Qos: r.QoS, NoLocal: r.NoLocal, RetainAsPublished: r.RetainAsPublished,
		RetainHandling: r.RetainHandling, Identifier: r.Identifier}
}

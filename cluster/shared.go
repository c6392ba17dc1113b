package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/nats-io/nats.go/jetstream"
)

// Shared subscriptions ($share/<group>/<filter>) are balanced across the group's members on every node. mochi
// picks one member per node, so each node would deliver its own copy; in a cluster mochi's choice is removed
// from every publish (OnSelectSubscribers) and each group+filter is served by ONE durable JetStream pull
// consumer on the stream, named from group and filter so that every node binds the same one. Every local
// member keeps pull requests open on it for as many messages as it has room for (shareWindow less its
// unacknowledged ones); the server hands messages to the waiting requests in turn, so the group's messages
// spread over its members cluster-wide, one member each, and a member's share follows how fast it
// acknowledges. A member has two requests (lanes), each for up to half its window: while one is renewed (a
// round trip to the consumer's leader, longer from other nodes) the other still waits, so a node far from
// the leader is not skipped meanwhile. A message is acknowledged to JetStream when its member acknowledged it (PUBACK, PUBCOMP; a
// QoS 0 copy when handed over); a member that disconnects first has its messages taken back from its session
// and redelivered at once to another member, and those of a node that dies come back after shareAckWait.
const (
	// shareAckWait is how long JetStream waits for a message's acknowledgement before redelivering it: the
	// delay after which messages held by a node that died go to other members. Messages still in flight to a
	// connected member are kept from redelivery (keepAlive, every third of it).
	shareAckWait      = 30 * time.Second
	shareWindow       = 32                   // unacknowledged messages per member
	shareLanes        = 2                    // pull requests per member, so that one is always waiting
	shareMaxAckPend   = 8192                 // per group consumer, cluster-wide
	shareMaxWaiting   = 8192                 // pull requests per consumer: shareLanes per connected member
	shareFetchWait    = 5 * time.Second      // a pull request's life; a member's puller notices its end within it
	shareInactive     = 2 * time.Minute      // a consumer no node pulls from for this long is deleted
	shareConsumerPfx  = "idmq-share-"        // + hash of group and filter
	shareOriginPrefix = "\x00idmq-share-"    // origin of a shared delivery; NUL: no MQTT client id [MQTT-1.5.4-2]
	shareGuardClient  = "\x00idmq-guard"     // holds the guard subscriptions, see shareGroup.guard
	shareGuardGroup   = "\x00idmq-guard-grp" // the guards' share group
)

// ShareConsumerName is the JetStream consumer of a shared subscription group and filter: the same on every
// node, and a valid consumer name whatever the group and filter hold.
func ShareConsumerName(group, filter string) string {
	sum := sha256.Sum256([]byte(group + "\x00" + filter))
	return shareConsumerPfx + hex.EncodeToString(sum[:16])
}

// splitShared returns the group and topic filter of a $share/<group>/<filter> subscription.
func splitShared(filter string) (group, topicFilter string, ok bool) {
	if !mqtt.IsSharedFilter(filter) {
		return "", "", false
	}
	parts := strings.SplitN(filter, "/", 3)
	if len(parts) != 3 || parts[1] == "" || parts[2] == "" {
		return "", "", false
	}
	return parts[1], parts[2], true
}

type shareKey struct{ group, filter string }

// sharing is a node's part in the cluster's shared subscriptions. mu guards groups, clients and every
// member's and group's fields but cons (consMu).
type sharing struct {
	c       *Cluster
	server  *mqtt.Server
	log     *slog.Logger
	ackWait time.Duration   // shareAckWait; tests shorten it (on every node: it is the consumer's)
	ctx     context.Context // ends with stop: pull requests, keep-alive
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	// readAllowed is the ACL's read check (HookOptions.ReadAllowed): a delivery it refuses is dropped, as mochi
	// drops it on one node, and acknowledged so that it is not redelivered for ever. Nil: not checked.
	readAllowed func(cl *mqtt.Client, topic string, write bool) bool

	injectMu sync.Mutex   // one delivery at a time through injector
	injector *mqtt.Client // publishes each shared delivery to its one member; never routed
	seq      uint64       // under injectMu
	current  atomic.Pointer[delivery]

	mu                         sync.Mutex
	groups                     map[shareKey]*shareGroup
	clients                    map[*mqtt.Client]*shareClient
	handed                     map[string][]*shareRecord   // by client id: a taken-over session's deliveries, until its new connection
	pending                    map[shareKey]int            // new groups admitted by SUBSCRIBEs not yet joined (sharequota.go)
	reserved                   map[*mqtt.Client][]shareKey // the pending groups of each client's SUBSCRIBE in progress
	maxGroups, maxClientGroups int                         // shareMaxGroups, shareMaxClientGroups; tests lower them
	records                    atomic.Int64                // unacknowledged deliveries: a fast path for OnQosComplete
}

// shareGroup is one group+filter with members on this node.
type shareGroup struct {
	key     shareKey
	name    string // the consumer
	guard   string // the guard subscription's filter
	members []*shareMember
	running int // pullers not yet exited; the group goes when it and members are 0

	consMu sync.Mutex
	cons   jetstream.Consumer
}

// shareMember is one local client's subscription to one group.
type shareMember struct {
	cl          *mqtt.Client
	g           *shareGroup
	filter      string // the subscription's filter as the client wrote it ($share/...): mochi's key
	outstanding int    // deliveries not yet acknowledged, reserved before handing over
	requested   int    // messages asked for by its open pull requests
	left        bool
	wake        [shareLanes]chan struct{} // per lane: an acknowledgement made room, or the member left
}

// shareClient is what a client holds: its memberships and its unacknowledged deliveries by packet id.
type shareClient struct {
	members []*shareMember
	records map[uint16]*shareRecord
}

// shareRecord is a delivery in flight: acknowledged to JetStream when the member acknowledges it.
type shareRecord struct {
	msg   shareMsg
	m     *shareMember
	id    uint16 // its packet id at the member
	since time.Time
}

// delivery is one handing over through the injector, observed by the hooks mochi calls meanwhile.
type delivery struct {
	origin   string
	m        *shareMember
	msg      shareMsg
	selected bool         // mochi asked whom to deliver to and the member still held its subscription
	qos      byte         // the QoS of the member's copy (once selected)
	dropped  bool         // mochi could not queue it (the member's outbound queue was full)
	rec      *shareRecord // in flight to a connected member (QoS 1/2)
	orphan   bool         // in flight to a member that closed meanwhile: taken back by settle
	orphanID uint16
}

func newSharing(c *Cluster, server *mqtt.Server) *sharing {
	inj := server.NewClient(nil, "cluster", "", true)
	inj.Properties.ProtocolVersion = 5
	ctx, cancel := context.WithCancel(context.Background())
	return &sharing{c: c, server: server, log: c.log, ackWait: shareAckWait, ctx: ctx, cancel: cancel, injector: inj,
		groups: map[shareKey]*shareGroup{}, clients: map[*mqtt.Client]*shareClient{}, handed: map[string][]*shareRecord{},
		pending: map[shareKey]int{}, reserved: map[*mqtt.Client][]shareKey{},
		maxGroups: shareMaxGroups, maxClientGroups: shareMaxClientGroups}
}

func (s *sharing) start() {
	s.wg.Add(1)
	go s.keepAlive()
}

// stop ends pulling and gives back what is unacknowledged: JetStream redelivers it to members elsewhere.
func (s *sharing) stop() {
	s.cancel()
	s.wg.Wait()
	s.mu.Lock()
	var back []shareMsg
	for _, sc := range s.clients {
		for id, r := range sc.records {
			back = append(back, r.msg)
			delete(sc.records, id)
		}
	}
	for id, rs := range s.handed {
		for _, r := range rs {
			back = append(back, r.msg)
		}
		delete(s.handed, id)
	}
	s.mu.Unlock()
	for _, m := range back {
		_ = m.Nak()
	}
}

// join makes cl a member of the group of its subscription filter (a $share filter), creating the group's
// consumer if this node had no member yet. It waits for the consumer (up to OpTimeout) so that a message
// published after the SUBACK is not missed.
func (s *sharing) join(cl *mqtt.Client, filter string) {
	group, topicFilter, ok := splitShared(filter)
	if !ok || cl.Net.Inline {
		return
	}
	key := shareKey{group, topicFilter}
	s.mu.Lock()
	if cl.Closed() { // its OnDisconnect may have run: it would never leave
		s.mu.Unlock()
		return
	}
	sc := s.clientOf(cl)
	for _, m := range sc.members {
		if m.g.key == key {
			m.filter = filter
			s.mu.Unlock()
			return
		}
	}
	g := s.groups[key]
	if g == nil {
		g = &shareGroup{key: key, name: ShareConsumerName(group, topicFilter),
			guard: "$share/" + shareGuardGroup + "/" + topicFilter}
		s.groups[key] = g
		// While the group has members here, every topic its filter matches has a shared subscriber in mochi,
		// so that mochi asks OnSelectSubscribers about each delivery, however members come and go.
		s.server.Topics.Subscribe(shareGuardClient, packets.Subscription{Filter: g.guard})
	}
	m := &shareMember{cl: cl, g: g, filter: filter}
	for i := range m.wake {
		m.wake[i] = make(chan struct{}, 1)
	}
	g.members = append(g.members, m)
	sc.members = append(sc.members, m)
	g.running += shareLanes
	s.mu.Unlock()

	ctx, cancel := context.WithTimeout(s.ctx, s.c.opts.OpTimeout)
	if _, err := s.consumer(ctx, g); err != nil {
		s.log.Warn("cluster: shared subscription consumer not ready; retrying", "filter", filter, "err", err)
	}
	cancel()
	for lane := range shareLanes {
		s.wg.Add(1)
		go s.pull(m, lane)
	}
}

// leave ends cl's membership in the group of filter; its deliveries in flight stay until acknowledged.
func (s *sharing) leave(cl *mqtt.Client, filter string) {
	group, topicFilter, ok := splitShared(filter)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sc := s.clients[cl]
	if sc == nil {
		return
	}
	for i, m := range sc.members {
		if m.g.key == (shareKey{group, topicFilter}) {
			sc.members = append(sc.members[:i], sc.members[i+1:]...)
			s.removeMember(m)
			break
		}
	}
	s.dropClientIfIdle(cl, sc)
}

// clientOf returns cl's entry, creating it. Under mu.
func (s *sharing) clientOf(cl *mqtt.Client) *shareClient {
	sc := s.clients[cl]
	if sc == nil {
		sc = &shareClient{records: map[uint16]*shareRecord{}}
		s.clients[cl] = sc
	}
	return sc
}

func (s *sharing) dropClientIfIdle(cl *mqtt.Client, sc *shareClient) {
	if len(sc.members) == 0 && len(sc.records) == 0 {
		delete(s.clients, cl)
	}
}

// removeMember takes m out of its group; its puller exits after its pull request. Under mu.
func (s *sharing) removeMember(m *shareMember) {
	if m.left {
		return
	}
	m.left = true
	g := m.g
	for i, x := range g.members {
		if x == m {
			g.members = append(g.members[:i], g.members[i+1:]...)
			break
		}
	}
	m.signal()
}

// pullerDone: m's puller exited. The last one of a group without members removes the group and its guard;
// the consumer stays for the other nodes and goes after shareInactive once nobody pulls.
func (s *sharing) pullerDone(g *shareGroup) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g.running--
	if g.running == 0 && len(g.members) == 0 && s.groups[g.key] == g {
		delete(s.groups, g.key)
		s.server.Topics.Unsubscribe(g.guard, shareGuardClient)
	}
}

// nextOrigin is the origin of the next delivery. Under injectMu.
func (s *sharing) nextOrigin() string {
	s.seq++
	return shareOriginPrefix + strconv.FormatUint(s.seq, 36)
}

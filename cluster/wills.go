package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/nats-io/nats.go/jetstream"
)

// wills publishes the Wills of clients whose node died. mochi publishes a Will when the connection ends on a
// live node; a node killed (or cut off for longer than PresenceTTL) publishes nothing. So every node keeps the
// Will of each of its connections in the idmq-wills bucket (one key per connection) while it is connected, and
// deletes it when the connection ends here (mochi then does what one node does). Every node follows the bucket
// and the presence bucket: a record whose node stopped renewing its presence, or restarted since it wrote the
// record, is an orphan; once the Will Delay Interval has passed since the loss was seen [MQTT-3.1.3-9],
// the surviving nodes race to delete the record at its revision, and the one that wins publishes the Will
// through the normal routed path (this node's mochi and the stream: every node delivers it, once). The ACL was
// checked at CONNECT. A client that connected again meanwhile decides: Clean Start 0 continues the session and
// cancels the Will, Clean Start 1 ends the session, which sends it (MQTT 5, 3.1.3.2.2).
type wills struct {
	c      *Cluster
	server *mqtt.Server
	owners *owners

	mu      sync.Mutex
	mine    map[string]ownWill // client id -> the record of its connection here
	closed  bool               // stop began: it deletes what is left in mine
	pending sync.WaitGroup     // deletes and fires in flight

	// The loop goroutine's own state.
	known    map[string]*knownWill // key -> a record of any node
	lastSeen map[string]time.Time  // node -> when its presence was last renewed (this node's clock)
	started  map[string]time.Time  // node -> its presence's start: a later one means it restarted
	lostAt   map[string]time.Time  // node -> when a read of its presence key found it gone (willprobe.go)
	probing  map[string]bool       // node -> a read of its presence key is on its way
	fired    chan fireResult
	probed   chan probeResult
	// probeNode reads a node's presence key; a test replaces it.
	probeNode func(ctx context.Context, node string) (found bool, started time.Time, err error)

	stopOnce sync.Once
	cancel   context.CancelFunc
	ctx      context.Context
	done     chan struct{}
}

// willRecord is the value of a connection's key in idmq-wills.
type willRecord struct {
	Client      string    `json:"client"`
	Node        string    `json:"node"`
	NodeStarted time.Time `json:"node_started"` // the node's presence start: its incarnation
	Conn        string    `json:"conn"`         // ownerRecord.Conn of the connection
	Delay       uint32    `json:"delay"`        // Will Delay Interval, seconds
	Will        []byte    `json:"will"`         // the Will as a routed message's envelope
}

type ownWill struct {
	cl    *mqtt.Client
	key   string
	rev   uint64
	delay uint32
	msg   Message
}

type knownWill struct {
	rev    uint64
	rec    willRecord
	since  time.Time // when its node was lost; zero while the node lives
	firing bool
}

type fireOutcome int

const (
	fireDone  fireOutcome = iota // published, cancelled, or another node won
	fireRetry                    // a JetStream call failed: try again at the next check
	fireAlive                    // the node's presence is there after all: not an orphan
)

type fireResult struct {
	key     string
	outcome fireOutcome
}

func newWills(c *Cluster, server *mqtt.Server, o *owners) *wills {
	return &wills{c: c, server: server, owners: o, mine: map[string]ownWill{}, known: map[string]*knownWill{},
		lastSeen: map[string]time.Time{}, started: map[string]time.Time{}, lostAt: map[string]time.Time{},
		probing: map[string]bool{}, fired: make(chan fireResult, 64), probed: make(chan probeResult, 16),
		probeNode: c.readPresence}
}

func willKey(clientID, conn string) string { return ClientKey(clientID) + "." + conn }

// track stores the Will of cl's new connection (claimed already). Without a Will nothing is stored. Best
// effort: a Will not stored is published by this node as usual, only not by another if this one dies.
func (w *wills) track(cl *mqtt.Client, pk packets.Packet) {
	// A connection of this client id here before (a takeover on this node) ends without its own record.
	w.mu.Lock()
	prev, had := w.mine[cl.ID]
	if had {
		delete(w.mine, cl.ID)
	}
	w.mu.Unlock()
	if had {
		w.dropLater(prev)
	}
	conn := w.owners.connOf(cl)
	if atomic.LoadUint32(&cl.Properties.Will.Flag) == 0 || conn == "" {
		return
	}
	msg := willMessage(cl, pk)
	msg.Origin = w.c.cfg.Node
	rec := willRecord{Client: cl.ID, Node: w.c.cfg.Node, NodeStarted: w.c.started(), Conn: conn,
		Delay: cl.Properties.Will.WillDelayInterval, Will: msg.encode(nil)}
	val, _ := json.Marshal(rec)
	key := willKey(cl.ID, conn)
	ctx, cancel := context.WithTimeout(context.Background(), ElectionWait)
	defer cancel()
	rev, err := throughElection(w.c, ctx, func(ctx context.Context) (uint64, error) {
		return w.c.b.wills.Put(ctx, key, val)
	})
	if err != nil {
		w.c.log.Warn("cluster: Will not stored: no other node would publish it if this one died", "client", cl.ID, "err", err)
		return
	}
	w.mu.Lock()
	w.mine[cl.ID] = ownWill{cl: cl, key: key, rev: rev, delay: rec.Delay, msg: msg}
	w.mu.Unlock()
}

// ended drops the record of cl's connection, which ended here: mochi handles its Will.
func (w *wills) ended(cl *mqtt.Client) {
	w.mu.Lock()
	own, ok := w.mine[cl.ID]
	ok = ok && own.cl == cl
	w.mu.Unlock()
	if ok {
		w.dropLater(own)
	}
}

// dropLater deletes own's record in the background. ended leaves it in mine until then: once stop began,
// stop deletes it.
func (w *wills) dropLater(own ownWill) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.pending.Add(1)
	w.mu.Unlock()
	go func() {
		defer w.pending.Done()
		if w.drop(context.Background(), own) == nil {
			w.mu.Lock()
			if cur, ok := w.mine[own.cl.ID]; ok && cur.key == own.key {
				delete(w.mine, own.cl.ID)
			}
			w.mu.Unlock()
		}
	}()
}

func (w *wills) drop(ctx context.Context, own ownWill) error {
	ctx, cancel := context.WithTimeout(ctx, w.c.opts.OpTimeout)
	defer cancel()
	err := w.c.b.wills.Delete(ctx, own.key, jetstream.LastRevision(own.rev))
	if err != nil && (errors.Is(err, jetstream.ErrKeyExists) || isWrongSequence(err)) {
		return nil // gone or replaced already
	}
	return err
}

// takenOver: cl's connection here is about to end because its client connected to another node with Clean
// Start cleanStart. As on one node, the Will is sent unless the new connection continues the session and the
// Will Delay Interval is above 0; a delay of 0 means at the close (mochi does it), and a Clean Start ends the
// session, which sends it at once (MQTT 5, 3.1.3.2.2, [MQTT-3.1.3-9]).
func (w *wills) takenOver(cl *mqtt.Client, cleanStart bool) {
	w.mu.Lock()
	own, ok := w.mine[cl.ID]
	w.mu.Unlock()
	if !ok || own.cl != cl || own.delay == 0 {
		return
	}
	// mochi would hold a delayed Will here, out of reach of the node the session moved to.
	atomic.StoreUint32(&cl.Properties.Will.Flag, 0)
	if cleanStart {
		w.publish(cl.ID, own.msg)
	}
}

// publish sends a Will as its client's publish through this node: mochi delivers it here, the hook routes it
// (and stores it as retained) for every other node. The ACL allowed its topic at CONNECT.
func (w *wills) publish(clientID string, m Message) {
	m.Created = w.c.opts.Now()
	pk, _ := packetOf(&m, m.Created)
	cl := w.server.NewClient(nil, "cluster", clientID, true)
	cl.Properties.ProtocolVersion = 5 // keep the Will's MQTT 5 properties
	if err := w.server.InjectPacket(cl, pk); err != nil {
		w.c.log.Warn("cluster: publishing a Will", "client", clientID, "err", err)
	}
}

// willMessage is the Will of cl's CONNECT as a routed message, its MQTT 5 properties included.
func willMessage(cl *mqtt.Client, pk packets.Packet) Message {
	will := cl.Properties.Will
	p := pk.Connect.WillProperties
	m := Message{Topic: will.TopicName, Payload: will.Payload, QoS: will.Qos, Retain: will.Retain, ClientID: cl.ID,
		MessageExpiry: p.MessageExpiryInterval, ContentType: p.ContentType, ResponseTopic: p.ResponseTopic,
		CorrelationData: p.CorrelationData}
	if p.PayloadFormatFlag {
		m.HasPayloadFormat, m.PayloadFormat = true, p.PayloadFormat
	}
	for _, up := range will.User {
		m.UserProperties = append(m.UserProperties, UserProperty{Key: up.Key, Value: up.Val})
	}
	return m
}

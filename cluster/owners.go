package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idmq/idmq/mochifix"
)

// owners enforces one connection per client id across the cluster through the idmq-owners bucket. A node that
// accepts a CONNECT claims the client's key (compare-and-set on the key's revision, so two nodes racing for one
// client id cannot both win unnoticed); every node watches the bucket and ends its own connection of a client
// whose key another node claimed (MQTT 5: DISCONNECT 0x8E Session taken over) [MQTT-3.1.4-3]. Only the same
// user may claim a key another user holds, as authhook allows on one node.
type owners struct {
	c      *Cluster
	server *mqtt.Server
	onTake func() // counts takeovers
	// beforeTakeover, if set, is told of a local connection about to end because the client connected to
	// another node with Clean Start cleanStart (the Will's fate depends on it, see wills.takenOver).
	beforeTakeover func(cl *mqtt.Client, cleanStart bool)

	mu    sync.Mutex
	mine  map[string]ownerClaim // client id -> this node's claim
	taken map[*mqtt.Client]bool // ended by a takeover from another node: their session moved

	cancel context.CancelFunc
	done   chan struct{}
}

type ownerClaim struct {
	cl   *mqtt.Client // the connection that claimed: a local takeover replaces it
	rev  uint64
	conn string // ownerRecord.Conn
}

type ownerRecord struct {
	Client string `json:"client"`
	Node   string `json:"node"`
	User   string `json:"user"`
	Conn   string `json:"conn"`            // one connection: a reconnect to the same node is a new claim
	Clean  bool   `json:"clean,omitempty"` // the connection's Clean Start: false continues the session
}

// errClientIDTaken: the client id is held by another user's session.
var errClientIDTaken = errors.New("cluster: client id belongs to another user's session")

func newOwners(c *Cluster, server *mqtt.Server, onTake func()) *owners {
	return &owners{c: c, server: server, onTake: onTake, mine: map[string]ownerClaim{}, taken: map[*mqtt.Client]bool{}}
}

// claim makes this node the owner of client id for user. It fails with errClientIDTaken for another user's id.
// existed reports that the id had an owner (connected or with a session that did not end).
func (o *owners) claim(cl *mqtt.Client, user string) (existed bool, err error) {
	id := cl.ID
	// A bucket whose leader died is waited for (throughElection), the whole claim within ElectionWait.
	ctx, cancel := context.WithTimeout(context.Background(), ElectionWait)
	defer cancel()
	key := ClientKey(id)
	conn := randomToken()[:16]
	rec, _ := json.Marshal(ownerRecord{Client: id, Node: o.c.cfg.Node, User: user, Conn: conn, Clean: cl.Properties.Clean})
	won := func(rev uint64, existed bool) (bool, error) {
		o.mu.Lock()
		o.mine[id] = ownerClaim{cl: cl, rev: rev, conn: conn}
		o.mu.Unlock()
		return existed, nil
	}
	var rev uint64
	for range 3 { // a lost compare-and-set: read again and decide again
		prev := rev
		rev = 0
		e, err := throughElection(o.c, ctx, func(ctx context.Context) (jetstream.KeyValueEntry, error) {
			return o.c.b.owners.Get(ctx, key)
		})
		switch {
		case err == nil:
			var cur ownerRecord
			if json.Unmarshal(e.Value(), &cur) == nil && cur.User != user {
				return true, errClientIDTaken
			}
			if cur.Conn == conn { // a write of ours that timed out was stored after all
				return won(e.Revision(), prev != 0)
			}
			rev = e.Revision()
		case !errors.Is(err, jetstream.ErrKeyNotFound):
			return false, fmt.Errorf("cluster: reading the owner of client %q: %w", id, err)
		}
		newRev, err := throughElection(o.c, ctx, func(ctx context.Context) (uint64, error) {
			if rev == 0 {
				return o.c.b.owners.Create(ctx, key, rec)
			}
			return o.c.b.owners.Update(ctx, key, rec, rev)
		})
		if err == nil {
			return won(newRev, rev != 0)
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !isWrongSequence(err) {
			return false, fmt.Errorf("cluster: claiming client %q: %w", id, err)
		}
	}
	return true, fmt.Errorf("cluster: claiming client %q: other nodes keep claiming it", id)
}

// owns reports whether cl is the connection through which this node holds its client id.
func (o *owners) owns(cl *mqtt.Client) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	claim, ok := o.mine[cl.ID]
	return ok && claim.cl == cl
}

// connOf is the connection token of cl's claim; "" if cl holds none.
func (o *owners) connOf(cl *mqtt.Client) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	if claim, ok := o.mine[cl.ID]; ok && claim.cl == cl {
		return claim.conn
	}
	return ""
}

func isWrongSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// release gives up this node's claim on a client whose session ended here (not one taken over: that key is
// another node's now). Best effort and in the background: a stale claim only names the last user.
func (o *owners) release(cl *mqtt.Client, expired bool) {
	o.mu.Lock()
	wasTaken := o.taken[cl]
	delete(o.taken, cl)
	claim, ok := o.mine[cl.ID]
	ok = ok && claim.cl == cl // not a connection that a local takeover already replaced
	if ok && expired && !wasTaken {
		delete(o.mine, cl.ID)
	}
	o.mu.Unlock()
	if wasTaken {
		// The session lives on the node that took it: drop this node's copy, or its subscriptions would
		// keep collecting messages here.
		if cur, ok := o.server.Clients.Get(cl.ID); ok && cur == cl {
			o.server.UnsubscribeClient(cl)
			o.server.Clients.Delete(cl.ID)
		}
		return
	}
	if !ok || !expired {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), o.c.opts.OpTimeout)
		defer cancel()
		_ = o.c.b.owners.Delete(ctx, ClientKey(cl.ID), jetstream.LastRevision(claim.rev))
	}()
}

// start follows the bucket's changes (not its history) until stop.
func (o *owners) start(ctx context.Context) error {
	watchCtx, cancel := context.WithCancel(context.Background())
	w, err := o.c.b.owners.WatchAll(watchCtx, jetstream.UpdatesOnly(), jetstream.IgnoreDeletes())
	if err != nil {
		cancel()
		return fmt.Errorf("cluster: watching client owners: %w", err)
	}
	o.cancel, o.done = cancel, make(chan struct{})
	go func() {
		defer close(o.done)
		defer func() { _ = w.Stop() }()
		for e := range w.Updates() {
			if e != nil {
				o.changed(e)
			}
		}
	}()
	return nil
}

func (o *owners) stop() {
	if o.cancel != nil {
		o.cancel()
		<-o.done
	}
}

// takenAway reports whether another node claimed cl's client id and this node is ending cl for it.
func (o *owners) takenAway(cl *mqtt.Client) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.taken[cl]
}

// changed ends this node's connection of a client another node claimed.
func (o *owners) changed(e jetstream.KeyValueEntry) {
	var rec ownerRecord
	if json.Unmarshal(e.Value(), &rec) != nil || rec.Node == o.c.cfg.Node {
		return // this node's own claim; a takeover here is mochi's
	}
	o.mu.Lock()
	claim, had := o.mine[rec.Client]
	delete(o.mine, rec.Client)
	if had {
		o.taken[claim.cl] = true
	}
	o.mu.Unlock()
	if !had {
		return
	}
	o.onTake()
	if o.beforeTakeover != nil {
		o.beforeTakeover(claim.cl, rec.Clean)
	}
	if err := mochifix.Disconnect(claim.cl, packets.ErrSessionTakenOver, ""); err != nil {
		o.release(claim.cl, false) // an offline persistent session: drop this node's copy now
	}
}

package cluster

import (
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
)

// localGate counts local publishes between the cluster hook's OnPublish (sent to the stream) and OnPublished
// (delivered here). busy means a message already in the stream may not be delivered here yet. shut stops new
// ones and waits for those in progress: a resume hands over to live delivery while nothing is half done.
// A publish mochi never delivers (its connection failed in between) is forgotten at the client's next publish
// or disconnect. The hot path is two atomic adds and a map read.
type localGate struct {
	n       atomic.Int64
	closed  atomic.Bool
	mu      sync.Mutex
	reopen  chan struct{} // closed when the gate opens again
	pending sync.Map      // non-inline *mqtt.Client -> *atomic.Bool: a publish of it is in progress
}

func (g *localGate) enter(cl *mqtt.Client) {
	for {
		g.n.Add(1)
		if !g.closed.Load() {
			break
		}
		g.n.Add(-1)
		g.mu.Lock()
		ch := g.reopen
		g.mu.Unlock()
		if ch != nil {
			<-ch
		}
	}
	if cl.Net.Inline {
		return // inline publishes may run concurrently: counted, not paired
	}
	v, ok := g.pending.Load(cl)
	if !ok {
		v, _ = g.pending.LoadOrStore(cl, new(atomic.Bool))
	}
	if v.(*atomic.Bool).Swap(true) {
		g.n.Add(-1) // its previous publish never reached OnPublished
	}
}

func (g *localGate) exit(cl *mqtt.Client) {
	if cl.Net.Inline {
		g.n.Add(-1)
		return
	}
	if v, ok := g.pending.Load(cl); ok && v.(*atomic.Bool).Swap(false) {
		g.n.Add(-1)
	}
}

// forget ends cl's publish in progress, if any, at its disconnect.
func (g *localGate) forget(cl *mqtt.Client) {
	if cl.Net.Inline {
		return
	}
	g.exit(cl)
	g.pending.Delete(cl)
}

func (g *localGate) busy() bool { return g.n.Load() != 0 }

// shut closes the gate and waits up to within for the publishes in progress; false (gate open again) if they
// did not finish.
func (g *localGate) shut(within time.Duration) bool {
	g.mu.Lock()
	g.reopen = make(chan struct{})
	g.mu.Unlock()
	g.closed.Store(true)
	deadline := time.Now().Add(within)
	for g.n.Load() != 0 {
		if time.Now().After(deadline) {
			g.open()
			return false
		}
		time.Sleep(200 * time.Microsecond)
	}
	return true
}

func (g *localGate) open() {
	g.closed.Store(false)
	g.mu.Lock()
	close(g.reopen)
	g.reopen = nil
	g.mu.Unlock()
}

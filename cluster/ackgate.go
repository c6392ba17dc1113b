package cluster

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"
)

// ackGate holds one MQTT connection's PUBACKs and PUBRECs until JetStream acknowledged the messages they
// answer, and releases them in the order mochi wrote them [MQTT-4.6.0-2]. The publisher's read loop never waits
// for JetStream: it may have as many messages on their way to the stream as its receive maximum allows, and
// their acks go out together as JetStream confirms them. A message JetStream refuses (or that times out) closes
// the connection with its acknowledgement, and every later one, unsent: the client sends them again.
//
// mochifix.CoalescingConn calls Hold for every acknowledgement it is asked to write; the gate takes those that
// answer a routed message (expect) and, to keep the order, any other written while some are pending.
type ackGate struct {
	conn    gatedConn
	latency interface{ Observe(float64) } // JetStream publish latency; may be nil
	// wireID is the id the client gave the publish its read loop is handling (Hook.OnPacketRead); only that
	// goroutine reads and writes it.
	wireID uint16

	mu      sync.Mutex
	queue   []*gatedAck
	running bool          // a release goroutine works on queue
	closed  bool          // failed or the client left: hold everything, send nothing
	wake    chan struct{} // an entry got its bytes, or the gate closed
}

// gatedConn is what the gate needs of mochifix.CoalescingConn.
type gatedConn interface {
	WriteReleased(p []byte) (int, error)
	Close() error
}

type gatedAck struct {
	pid   uint16
	ack   *Ack // nil: an acknowledgement of a message that was not routed (refused, a duplicate)
	sent  time.Time
	bytes []byte // the acknowledgement as mochi encoded it; nil until mochi wrote it
}

// maxAckWrite bounds how long the gate waits for mochi to write the acknowledgement of a routed message after
// routing it (the backpressure fix may hold the publish in between, for mqtt.slow_subscriber_wait).
const maxAckWrite = time.Minute

var errAckNeverWritten = errors.New("cluster: mochi did not acknowledge a routed publish")

func newAckGate(conn gatedConn) *ackGate {
	return &ackGate{conn: conn, wake: make(chan struct{}, 1)}
}

// expect registers the routed message with packet id pid, whose acknowledgement mochi is about to write. It is
// called from the client's read loop, before that write.
func (g *ackGate) expect(pid uint16, ack *Ack) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return
	}
	g.queue = append(g.queue, &gatedAck{pid: pid, ack: ack, sent: time.Now()})
	if !g.running {
		g.running = true
		go g.release()
	}
}

// Hold implements mochifix.AckGate; the connection's write lock is held.
func (g *ackGate) Hold(p []byte) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return true // the connection is being closed for a lost message: no later ack may overtake it
	}
	if len(g.queue) == 0 {
		return false
	}
	pid, ok := ackPacketID(p)
	for _, e := range g.queue {
		if ok && e.ack != nil && e.bytes == nil && e.pid == pid {
			e.bytes = slices.Clone(p)
			g.signal()
			return true
		}
	}
	g.queue = append(g.queue, &gatedAck{bytes: slices.Clone(p)})
	g.signal()
	return true
}

func (g *ackGate) signal() {
	select {
	case g.wake <- struct{}{}:
	default:
	}
}

// close ends the gate without closing the connection (the client left).
func (g *ackGate) close() {
	g.mu.Lock()
	g.closed, g.queue = true, nil
	g.mu.Unlock()
	g.signal()
}

func (g *ackGate) fail() {
	g.close()
	_ = g.conn.Close()
}

// release writes acknowledgements in queue order as they become ready, several in one write when they are.
func (g *ackGate) release() {
	var out []byte
	for {
		g.mu.Lock()
		if g.closed || len(g.queue) == 0 {
			g.running = false
			g.mu.Unlock()
			return
		}
		head := g.queue[0]
		g.mu.Unlock()
		if head.ack != nil {
			if _, err := head.ack.Wait(context.Background()); err != nil { // bounded by OpTimeout
				g.fail()
				return
			}
			if g.latency != nil {
				g.latency.Observe(time.Since(head.sent).Seconds())
			}
		}
		if !g.waitBytes(head) {
			g.fail()
			return
		}
		out = append(out[:0], head.bytes...)
		g.mu.Lock()
		g.queue = g.queue[1:]
		// Take the following ones that are ready too: one write for a burst.
		for len(g.queue) > 0 && g.queue[0].bytes != nil && (g.queue[0].ack == nil || g.queue[0].ack.ready()) {
			if g.queue[0].ack != nil && g.queue[0].ack.err != nil {
				break // the head of the next round: it fails the connection
			}
			out = append(out, g.queue[0].bytes...)
			g.queue = g.queue[1:]
		}
		g.mu.Unlock()
		if _, err := g.conn.WriteReleased(out); err != nil {
			g.fail()
			return
		}
	}
}

// waitBytes waits until mochi wrote e's acknowledgement; false if the gate closed or it never came.
func (g *ackGate) waitBytes(e *gatedAck) bool {
	timeout := time.NewTimer(maxAckWrite)
	defer timeout.Stop()
	for {
		g.mu.Lock()
		done, closed := e.bytes != nil, g.closed
		g.mu.Unlock()
		if closed {
			return false
		}
		if done {
			return true
		}
		select {
		case <-g.wake:
		case <-timeout.C:
			return false
		}
	}
}

// ackPacketID reads the packet id of a PUBACK or PUBREC: after the fixed header's remaining length.
func ackPacketID(p []byte) (uint16, bool) {
	i := 1
	for ; i < len(p) && i <= 4; i++ {
		if p[i]&0x80 == 0 {
			break
		}
	}
	i++
	if i+2 > len(p) {
		return 0, false
	}
	return uint16(p[i])<<8 | uint16(p[i+1]), true
}

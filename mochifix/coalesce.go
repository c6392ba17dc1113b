package mochifix

// Defect: mochi v2.7.9 writes each acknowledgement with a write(2) of its own as soon as it handles the
// publish: a publisher with 32 QoS 1 messages in flight costs 32 system calls per burst where one does (in
// the QoS 1 fan-in, write(2) was a fifth of the broker's CPU; BENCHMARKS.md).
// Fix: CoalescingConn, which Listener puts around each accepted connection.
// Upstream: none filed.
// Proof: TestCoalescingConnSendsAcksOfOneBatchInOneWrite and the other tests in coalesce_test.go.
// Delete when: mochi buffers a read batch's acknowledgements itself.

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// CoalescingConn holds the acknowledgements (PUBACK, PUBREC, PUBCOMP) written to a connection while its
// read loop works through input already received, and sends them in one write(2) when the loop reads
// again, or at Close (bounded by closeFlushTimeout). Any other write goes out at once, after what is held.
// The holding flag is cleared under the flush's lock before a Read that could block, so nothing is held
// while the loop waits for input.
type CoalescingConn struct {
	net.Conn

	mu      sync.Mutex // serializes writes to Conn, and guards held and holding
	held    []byte
	holding bool        // set when a Read returned data; cleared by the next Read
	closed  atomic.Bool // Close was called: nothing is held any more
	gate    AckGate     // optional: decides when a PUBACK or PUBREC may go out at all
}

// AckGate may take a publish acknowledgement (PUBACK, PUBREC) away from the connection and write it later
// with WriteReleased, once what it acknowledges is safe elsewhere (cluster/: the JetStream ack). Hold is
// called with the connection's write lock held, in the order mochi writes; p is valid only during the call.
type AckGate interface {
	Hold(p []byte) bool
}

// SetAckGate installs g; acknowledgements written from now on pass through it.
func (c *CoalescingConn) SetAckGate(g AckGate) {
	c.mu.Lock()
	c.gate = g
	c.mu.Unlock()
}

// WriteReleased writes an acknowledgement the gate held, as Write would have without the gate.
func (c *CoalescingConn) WriteReleased(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writeLocked(p, isPublishAck(p))
}

const (
	// maxHeldBytes bounds what a connection holds: more is written at once, in one system call.
	maxHeldBytes = 64 << 10
	// closeFlushTimeout bounds the flush at Close for a client that stopped reading.
	closeFlushTimeout = time.Second
)

// NewCoalescingConn wraps c.
func NewCoalescingConn(c net.Conn) *CoalescingConn { return &CoalescingConn{Conn: c} }

// CoalescingConnOf returns the CoalescingConn under conn, as mochi's client holds it: Listener puts the Receive
// Maximum window (receivemax.go) around it.
func CoalescingConnOf(conn net.Conn) (*CoalescingConn, bool) {
	if w, ok := conn.(*windowConn); ok {
		conn = w.Conn
	}
	c, ok := conn.(*CoalescingConn)
	return c, ok
}

// Read flushes what is held, then reads. Reads happen on the client's read loop only.
func (c *CoalescingConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	c.holding = false
	err := c.flushLocked()
	c.mu.Unlock()
	if err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.mu.Lock()
		c.holding = !c.closed.Load()
		c.mu.Unlock()
	}
	return n, err
}

// Write holds an acknowledgement while the read loop has input in hand, and writes anything else through,
// after what is held.
func (c *CoalescingConn) Write(p []byte) (int, error) { return c.write(p, isPublishAck(p)) }

// writeFromReadLoop is Write for packets the read loop itself sends because of what it read: the
// deliveries an acknowledgement releases from a Receive Maximum window (receivemax.go) go out with the
// batch's acknowledgements, in one write(2).
func (c *CoalescingConn) writeFromReadLoop(p []byte) (int, error) { return c.write(p, true) }

func (c *CoalescingConn) write(p []byte, holdable bool) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gate != nil && isGatedAck(p) && c.gate.Hold(p) {
		return len(p), nil
	}
	return c.writeLocked(p, holdable)
}

func (c *CoalescingConn) writeLocked(p []byte, holdable bool) (int, error) {
	if c.holding && holdable && len(c.held)+len(p) <= maxHeldBytes && !c.closed.Load() {
		c.held = append(c.held, p...)
		return len(p), nil
	}
	if len(c.held) > 0 {
		c.held = append(c.held, p...)
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// Close sends what is held (bounded by closeFlushTimeout) and closes the connection. While another write is
// in progress, possibly blocked on a client that stopped reading, Close does not wait for it: closing the
// connection is what ends that write, as it did before the connection was wrapped, and what is held is lost
// with the connection.
func (c *CoalescingConn) Close() error {
	c.closed.Store(true)
	if c.mu.TryLock() {
		c.holding = false
		if len(c.held) > 0 {
			_ = c.Conn.SetWriteDeadline(time.Now().Add(closeFlushTimeout))
			_ = c.flushLocked()
		}
		c.mu.Unlock()
	}
	return c.Conn.Close()
}

func (c *CoalescingConn) flushLocked() error {
	if len(c.held) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.held)
	if cap(c.held) > 4<<10 {
		c.held = nil // a burst's buffer is not kept by an idle connection
	} else {
		c.held = c.held[:0]
	}
	return err
}

// isGatedAck reports whether p is an acknowledgement of a received PUBLISH (PUBACK or PUBREC).
func isGatedAck(p []byte) bool {
	return len(p) > 0 && (p[0]>>4 == packets.Puback || p[0]>>4 == packets.Pubrec)
}

// isPublishAck reports whether p starts with a PUBACK, PUBREC or PUBCOMP (mochi writes whole packets).
// Deliveries are not held: that handed clients their messages in bursts, their PUBACKs lagged, and mochi
// v2.7.9, which keeps client and server packet ids in one map, refused more SUBSCRIBEs with 0x91.
func isPublishAck(p []byte) bool {
	if len(p) == 0 {
		return false
	}
	switch p[0] >> 4 {
	case packets.Puback, packets.Pubrec, packets.Pubcomp:
		return true
	}
	return false
}

package broker

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// coalescingConn gathers the acknowledgements (PUBACK, PUBREC, PUBCOMP) written to a connection while its read
// loop works through input it has already received, and sends them in one write(2) when the loop reads again.
// mochi writes each with a system call of its own as soon as it handles the publish, so a publisher with 32 QoS 1
// messages in flight cost the broker 32 writes per burst where one does: in the QoS 1 fan-in, write(2) was a
// fifth of the broker's CPU (BENCHMARKS.md). Any other write goes out at once, after what is held.
//
// A held write waits at most until the read loop's next Read, which flushes before it can block on the
// client, or until Close, which flushes (bounded by closeFlushTimeout) before closing. The flag that holds
// writes is cleared under the same lock as the flush, before the Read that could block, so no write is held
// while the loop waits for input: a write either goes out at once or is seen by the next flush.
type coalescingConn struct {
	net.Conn

	mu      sync.Mutex // serializes writes to Conn, and guards held and holding
	held    []byte
	holding bool        // set when a Read returned data; cleared by the next Read
	closed  atomic.Bool // Close was called: nothing is held any more
}

const (
	// maxHeldBytes bounds what a connection holds: more is written at once, in one system call.
	maxHeldBytes = 64 << 10
	// closeFlushTimeout bounds the flush at Close for a client that stopped reading.
	closeFlushTimeout = time.Second
)

func newCoalescingConn(c net.Conn) *coalescingConn { return &coalescingConn{Conn: c} }

// Read flushes what is held, then reads. Reads happen on the client's read loop only.
func (c *coalescingConn) Read(p []byte) (int, error) {
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
func (c *coalescingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.holding && isPublishAck(p) && len(c.held)+len(p) <= maxHeldBytes && !c.closed.Load() {
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
func (c *coalescingConn) Close() error {
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

func (c *coalescingConn) flushLocked() error {
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

// isPublishAck reports whether p starts with a PUBACK, PUBREC or PUBCOMP: the answers to the client's own
// publishes, which its read loop writes one by one. mochi writes whole packets, so p starts with a fixed header.
//
// Only these are held. Holding deliveries too (PUBLISH, and CONNACK with a resumed session's messages) saved
// more system calls but handed clients their messages in bursts, so that their PUBACKs lagged; mochi v2.7.9
// keeps the client's and the server's packet identifiers in one map and refuses a SUBSCRIBE whose identifier
// matches an unacknowledged delivery (0x91), which then happened several times as often (BENCHMARKS.md).
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

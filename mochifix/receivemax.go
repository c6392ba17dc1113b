package mochifix

// Defect: mochi v2.7.9 holds deliveries at an MQTT 5 client's Receive Maximum only through its send quota,
// whose release path deadlocks (quota.go) and forgets each message it releases; with the quota off it
// sends a client any number of unacknowledged QoS 1/2 PUBLISHes, however small the Receive Maximum the
// client announced [MQTT-3.3.4-9].
// Fix: windowConn, which Listener puts around each connection, holds the encoded QoS 1/2 PUBLISHes beyond
// the client's Receive Maximum as mochi writes them, and writes them in order as the client's PUBACK,
// PUBCOMP or failed PUBREC frees a place [MQTT-4.9.0-2] (receiveMaximum reads those in OnPacketRead).
// Nobody waits: mochi's writer goes on, QoS 0 and every other packet pass at once, which the spec allows
// [MQTT-4.9.0-3]. What is held is in mochi's in-flight store too, so it is bounded by mqtt.max_inflight,
// resent after a reconnect, and counted by the backpressure fix. (Blocking mochi's writer instead would
// strand the packets before it in mochi's own write buffer, which only a later write flushes.)
// Upstream: none filed.
// Proof: TestReceiveMaximumHoldsDeliveries (receivemax_test.go), TestQoS1FanInToClientWithReceiveMaximum (e2e).
// Delete when: mochi's send quota works without quota.go (Inflight.NextImmediate locks once and a
// released message stays in flight).

import (
	"net"
	"sync"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// receiveMaximum tells each connection its client's Receive Maximum and its acknowledgements.
type receiveMaximum struct {
	mqtt.HookBase
	maxInflight int
}

func (h *receiveMaximum) ID() string { return "idmq-receive-maximum" }

func (h *receiveMaximum) Provides(b byte) bool {
	return b == mqtt.OnSessionEstablish || b == mqtt.OnPacketRead
}

// OnSessionEstablish runs before a resumed session's messages are resent, so they are counted.
func (h *receiveMaximum) OnSessionEstablish(cl *mqtt.Client, _ packets.Packet) {
	rm := int(cl.Properties.Props.ReceiveMaximum)
	w, ok := cl.Net.Conn.(*windowConn)
	if !ok || cl.Properties.ProtocolVersion < 5 || rm == 0 || rm >= h.maxInflight {
		return // 0 is absent: 65,535 [MQTT-3.1.2-19]; at or above max_inflight, mochi never has more in flight
	}
	w.limit.Store(int32(rm))
}

// OnPacketRead: an acknowledgement that ends a QoS 1/2 delivery frees its place.
func (h *receiveMaximum) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	switch pk.FixedHeader.Type {
	case packets.Puback, packets.Pubcomp:
	case packets.Pubrec:
		if pk.ReasonCode < packets.ErrUnspecifiedError.Code {
			return pk, nil // the flow goes on with PUBREL; the place is freed at PUBCOMP
		}
	default:
		return pk, nil
	}
	if w, ok := cl.Net.Conn.(*windowConn); ok && w.limit.Load() > 0 {
		return pk, w.acknowledged(pk.PacketID)
	}
	return pk, nil
}

// windowConn passes writes through until it is given a limit; then it parses what mochi writes (mochi
// writes whole packets) and holds QoS 1/2 PUBLISHes beyond the limit.
type windowConn struct {
	net.Conn
	limit atomic.Int32 // 0: no limit

	mu   sync.Mutex // serializes writes to Conn, and guards sent and held
	sent map[uint16]struct{}
	held []heldPublish
}

type heldPublish struct {
	id    uint16
	bytes []byte
}

func newWindowConn(c net.Conn) *windowConn { return &windowConn{Conn: c} }

func (c *windowConn) Write(p []byte) (int, error) {
	limit := int(c.limit.Load())
	if limit == 0 {
		return c.Conn.Write(p)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sent == nil {
		c.sent = make(map[uint16]struct{}, limit)
	}
	pass, copied := p, false
	for off := 0; off < len(p); {
		n, id, qos := publishHeader(p[off:])
		if n <= 0 {
			break // not a whole packet: pass the rest as it is
		}
		hold := false
		if qos > 0 {
			if _, resent := c.sent[id]; !resent {
				hold = len(c.held) > 0 || len(c.sent) >= limit
				if !hold {
					c.sent[id] = struct{}{}
				}
			}
		}
		if hold && !copied {
			pass, copied = append([]byte(nil), p[:off]...), true
		}
		switch {
		case hold:
			c.held = append(c.held, heldPublish{id: id, bytes: append([]byte(nil), p[off:off+n]...)})
		case copied:
			pass = append(pass, p[off:off+n]...)
		}
		off += n
	}
	if len(pass) == 0 {
		return len(p), nil
	}
	if _, err := c.Conn.Write(pass); err != nil {
		return 0, err
	}
	return len(p), nil
}

// acknowledged frees id's place and writes what was held while there is room.
func (c *windowConn) acknowledged(id uint16) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.sent[id]; !ok {
		return nil
	}
	delete(c.sent, id)
	var out []byte
	limit := int(c.limit.Load())
	for len(c.held) > 0 && len(c.sent) < limit {
		h := c.held[0]
		c.held[0] = heldPublish{}
		c.held = c.held[1:]
		c.sent[h.id] = struct{}{}
		out = append(out, h.bytes...)
	}
	if len(out) == 0 {
		return nil
	}
	if inner, ok := c.Conn.(*CoalescingConn); ok {
		_, err := inner.writeFromReadLoop(out)
		return err
	}
	_, err := c.Conn.Write(out)
	return err
}

// publishHeader reads the packet at the start of b: its length n (0 if b does not hold all of it) and,
// for a PUBLISH, its QoS and packet id (qos 0 for any other packet).
func publishHeader(b []byte) (n int, id uint16, qos byte) {
	if len(b) < 2 {
		return 0, 0, 0
	}
	remaining, mult, i := 0, 1, 1
	for ; ; i++ {
		if i >= len(b) || i > 4 {
			return 0, 0, 0
		}
		remaining += int(b[i]&0x7f) * mult
		mult *= 128
		if b[i]&0x80 == 0 {
			break
		}
	}
	n = i + 1 + remaining
	if n > len(b) {
		return 0, 0, 0
	}
	if b[0]>>4 != packets.Publish {
		return n, 0, 0
	}
	qos = (b[0] >> 1) & 3
	body := b[i+1 : n]
	if qos == 0 || len(body) < 2 {
		return n, 0, 0
	}
	topicEnd := 2 + (int(body[0])<<8 | int(body[1]))
	if topicEnd+2 > len(body) {
		return n, 0, 0
	}
	return n, uint16(body[topicEnd])<<8 | uint16(body[topicEnd+1]), qos
}

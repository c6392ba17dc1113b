// Package wsconn presents a WebSocket as the byte stream MQTT runs over, for the broker's listener, the
// bench tool's dialer and the tests' clients alike.
package wsconn

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// ErrTextFrame is what Read returns when the peer sends a text message: MQTT over WebSocket is binary
// only [MQTT-6.0.0-1].
var ErrTextFrame = errors.New("websocket: MQTT requires binary frames")

// Conn is a net.Conn over a WebSocket. Read spans messages, since MQTT packets may be split across
// messages and a message may hold several packets [MQTT-6.0.0-2]; each Write is one binary message.
// Addresses and Close are the underlying socket's. Deadlines go through gorilla, which sets its own write
// deadline on the socket before every message, so a write deadline set on the socket alone would not hold.
type Conn struct {
	net.Conn
	ws     *websocket.Conn
	rmu    sync.Mutex
	reader io.Reader
	// wmu makes concurrent writers (a client's pinger beside its publisher, the broker's writer beside its
	// keepalive) send whole messages: gorilla allows one writer at a time.
	wmu           sync.Mutex
	writeDeadline atomic.Pointer[time.Time]
}

// New wraps an upgraded or dialled WebSocket.
func New(ws *websocket.Conn) *Conn {
	return &Conn{Conn: ws.UnderlyingConn(), ws: ws}
}

func (c *Conn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for {
		if c.reader == nil {
			op, r, err := c.ws.NextReader()
			if err != nil {
				return 0, err
			}
			if op != websocket.BinaryMessage {
				return 0, ErrTextFrame
			}
			c.reader = r
		}
		n, err := c.reader.Read(p)
		if errors.Is(err, io.EOF) {
			c.reader = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if d := c.writeDeadline.Load(); d != nil {
		_ = c.ws.SetWriteDeadline(*d)
	}
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// SetDeadline sets both deadlines, as on a TCP connection: mochi's keepalive deadline then bounds writes to
// a stalled WebSocket client too.
func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

func (c *Conn) SetReadDeadline(t time.Time) error { return c.ws.SetReadDeadline(t) }

// SetWriteDeadline applies from the next Write on. gorilla's own setter is not safe beside a write in
// progress, and mochi sets deadlines from its reading goroutine while another writes.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.writeDeadline.Store(&t)
	return nil
}

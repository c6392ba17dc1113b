package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// maxIncomingPacket bounds what one broker packet may make us allocate.
const maxIncomingPacket = 2 << 20

// readBufferSize is small on purpose: the generator may hold 100,000 connections that mostly idle.
const readBufferSize = 512

// connectOptions describe one CONNECT.
type connectOptions struct {
	version    byte // 4 or 5
	clientID   string
	cred       credential
	sendCred   bool
	authMethod string // MQTT 5: secret goes in Authentication Data instead of the password
	keepalive  uint16
	receiveMax uint16        // MQTT 5 Receive Maximum; 0 leaves it out (the spec's default is 65,535)
	timeout    time.Duration // dial + CONNACK
}

// connectPacket builds the CONNECT; a clean session so that nothing outlives the run on the broker.
func connectPacket(o connectOptions) packets.Packet {
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: o.version,
		Connect: packets.ConnectParams{
			ProtocolName:     []byte("MQTT"),
			Clean:            true,
			Keepalive:        o.keepalive,
			ClientIdentifier: o.clientID,
		},
	}
	if o.version == 5 {
		pk.Properties.ReceiveMaximum = o.receiveMax
	}
	if !o.sendCred {
		return pk
	}
	pk.Connect.Username, pk.Connect.UsernameFlag = []byte(o.cred.username), true
	switch {
	case o.authMethod != "":
		pk.Properties.AuthenticationMethod = o.authMethod
		pk.Properties.AuthenticationData = []byte(o.cred.secret)
	case o.cred.secret != "":
		pk.Connect.Password, pk.Connect.PasswordFlag = []byte(o.cred.secret), true
	}
	return pk
}

// connackError is the broker refusing a CONNECT; its text is the failure key in results.
type connackError struct {
	version byte
	code    byte
}

func (e *connackError) Error() string {
	return fmt.Sprintf("connack 0x%02x %s", e.code, reasonName(e.version, packets.Connack, e.code))
}

// ackError is a refused SUBSCRIBE or PUBLISH, or a broker DISCONNECT.
type ackError struct {
	version byte
	kind    byte // packets.Suback, packets.Puback or packets.Disconnect
	code    byte
}

func (e *ackError) Error() string {
	return fmt.Sprintf("%s 0x%02x %s", packetName(e.kind), e.code, reasonName(e.version, e.kind, e.code))
}

func packetName(kind byte) string {
	switch kind {
	case packets.Suback:
		return "suback"
	case packets.Puback:
		return "puback"
	case packets.Disconnect:
		return "disconnect"
	}
	return "connack"
}

var v3ConnackNames = map[byte]string{
	1: "unacceptable protocol version", 2: "identifier rejected", 3: "server unavailable",
	4: "bad user name or password", 5: "not authorized",
}

var v5ReasonNames = map[byte]string{
	0x00: "success", 0x04: "disconnect with will message", 0x10: "no matching subscribers",
	0x80: "unspecified error", 0x81: "malformed packet", 0x82: "protocol error",
	0x83: "implementation specific error", 0x84: "unsupported protocol version", 0x85: "client identifier not valid",
	0x86: "bad user name or password", 0x87: "not authorized", 0x88: "server unavailable", 0x89: "server busy",
	0x8A: "banned", 0x8B: "server shutting down", 0x8C: "bad authentication method", 0x8D: "keep alive timeout",
	0x8E: "session taken over", 0x8F: "topic filter invalid", 0x90: "topic name invalid", 0x91: "packet identifier in use",
	0x93: "receive maximum exceeded", 0x95: "packet too large", 0x97: "quota exceeded", 0x98: "administrative action",
	0x99: "payload format invalid", 0x9C: "use another server", 0x9F: "connection rate exceeded", 0xA0: "maximum connect time",
	0xA2: "wildcard subscriptions not supported",
}

func reasonName(version, kind, code byte) string {
	if version != 5 && kind == packets.Connack {
		if n, ok := v3ConnackNames[code]; ok {
			return n
		}
	}
	if n, ok := v5ReasonNames[code]; ok {
		return n
	}
	return "unknown"
}

// errClosed marks a connection we closed ourselves.
var errClosed = errors.New("closed by client")

// client is a minimal MQTT client: one reader goroutine, writes under a mutex, no per-client timers.
// Handlers are set before start and run on the reader goroutine; they must not keep the payload.
type client struct {
	conn       net.Conn
	r          *bufio.Reader
	rbuf       []byte
	version    byte
	keepalive  time.Duration // as agreed with the broker; 0 = none
	receiveMax int           // the broker's Receive Maximum (65535 when it sends none)

	onMessage func(payload []byte)
	onPuback  func(code byte)
	subacks   chan []byte

	wmu       sync.Mutex
	wbuf      bytes.Buffer
	lastID    uint16
	lastWrite atomic.Int64 // UnixNano

	started  atomic.Bool
	closing  atomic.Bool
	done     chan struct{} // closed after the reader's last handler call
	doneOnce sync.Once
	err      error // why the reader stopped; read after done
}

// dialClient opens a connection and completes CONNECT/CONNACK. It returns the time from writing CONNECT to
// reading CONNACK, which is the broker's connect cost as a client sees it.
func dialClient(ctx context.Context, d *dialer, o connectOptions) (*client, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	conn, err := d.Dial(ctx)
	if err != nil {
		return nil, 0, err
	}
	c := &client{
		conn:       conn,
		r:          bufio.NewReaderSize(conn, readBufferSize),
		version:    o.version,
		keepalive:  time.Duration(o.keepalive) * time.Second,
		receiveMax: 65535,
		subacks:    make(chan []byte, 1),
		done:       make(chan struct{}),
	}
	deadline, _ := ctx.Deadline()
	_ = conn.SetDeadline(deadline)
	// Closing the conn is what unblocks the handshake when the run is cancelled (a websocket's deadlines must
	// not change while another goroutine writes, closing is safe).
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()

	pk := connectPacket(o)
	start := time.Now()
	if err := c.write(&pk, (*packets.Packet).ConnectEncode); err != nil {
		conn.Close()
		return nil, 0, fmt.Errorf("write connect: %w", err)
	}
	ack, err := c.readPacket()
	latency := time.Since(start)
	if err != nil {
		conn.Close()
		if errors.Is(err, io.EOF) {
			return nil, latency, errors.New("closed before connack")
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, latency, errors.New("connack timeout")
		}
		return nil, latency, fmt.Errorf("read connack: %w", err)
	}
	if ack.FixedHeader.Type != packets.Connack {
		conn.Close()
		return nil, latency, fmt.Errorf("expected connack, got %s", packets.PacketNames[ack.FixedHeader.Type])
	}
	if (o.version == 5 && ack.ReasonCode >= 0x80) || (o.version != 5 && ack.ReasonCode != 0) {
		conn.Close()
		return nil, latency, &connackError{version: o.version, code: ack.ReasonCode}
	}
	if ack.Properties.ServerKeepAliveFlag { // [MQTT-3.2.2-21]
		c.keepalive = time.Duration(ack.Properties.ServerKeepAlive) * time.Second
	}
	if ack.Properties.ReceiveMaximum > 0 {
		c.receiveMax = int(ack.Properties.ReceiveMaximum)
	}
	_ = conn.SetDeadline(time.Time{})
	return c, latency, nil
}

// readPacket reads one packet; the returned packet's byte slices alias c.rbuf until the next call.
func (c *client) readPacket() (packets.Packet, error) {
	hb, err := c.r.ReadByte()
	if err != nil {
		return packets.Packet{}, err
	}
	pk := packets.Packet{ProtocolVersion: c.version}
	if err := pk.FixedHeader.Decode(hb); err != nil {
		return pk, err
	}
	n, _, err := packets.DecodeLength(c.r)
	if err != nil {
		return pk, err
	}
	if n > maxIncomingPacket {
		return pk, fmt.Errorf("broker sent a %d-byte packet, more than %d", n, maxIncomingPacket)
	}
	pk.FixedHeader.Remaining = n
	if cap(c.rbuf) < n {
		c.rbuf = make([]byte, n)
	}
	buf := c.rbuf[:n]
	if _, err := io.ReadFull(c.r, buf); err != nil {
		return pk, err
	}
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(buf)
	case packets.Publish:
		err = pk.PublishDecode(buf)
	case packets.Puback:
		err = pk.PubackDecode(buf)
	case packets.Suback:
		err = pk.SubackDecode(buf)
	case packets.Disconnect:
		err = pk.DisconnectDecode(buf)
	case packets.Pingresp:
	default:
		err = fmt.Errorf("unexpected %s packet", packets.PacketNames[pk.FixedHeader.Type])
	}
	return pk, err
}

// start runs the reader; set the handlers first.
func (c *client) start() {
	c.started.Store(true)
	go c.readLoop()
}

func (c *client) readLoop() {
	for {
		pk, err := c.readPacket()
		if err != nil {
			c.finish(err)
			return
		}
		switch pk.FixedHeader.Type {
		case packets.Publish:
			if c.onMessage != nil {
				c.onMessage(pk.Payload)
			}
			if pk.FixedHeader.Qos == 1 { // [MQTT-4.3.2-2]
				ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID, ProtocolVersion: c.version}
				if err := c.write(&ack, (*packets.Packet).PubackEncode); err != nil {
					c.finish(err)
					return
				}
			}
		case packets.Puback:
			if c.onPuback != nil {
				c.onPuback(pk.ReasonCode)
			}
		case packets.Suback:
			select {
			case c.subacks <- append([]byte(nil), pk.ReasonCodes...):
			default:
			}
		case packets.Disconnect:
			c.finish(&ackError{version: c.version, kind: packets.Disconnect, code: pk.ReasonCode})
			return
		}
	}
}

// finish records why the connection ended, once.
func (c *client) finish(err error) {
	c.doneOnce.Do(func() {
		if c.closing.Load() {
			err = errClosed
		}
		c.err = err
		c.conn.Close()
		close(c.done)
	})
}

// write encodes and sends one packet; packets from several goroutines never interleave.
func (c *client) write(pk *packets.Packet, encode func(*packets.Packet, *bytes.Buffer) error) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.writeLocked(pk, encode)
}

func (c *client) writeLocked(pk *packets.Packet, encode func(*packets.Packet, *bytes.Buffer) error) error {
	if pk.FixedHeader.Type == packets.Subscribe || (pk.FixedHeader.Type == packets.Publish && pk.FixedHeader.Qos > 0) {
		c.lastID++
		if c.lastID == 0 { // [MQTT-2.2.1-3]: packet identifiers are non-zero
			c.lastID = 1
		}
		pk.PacketID = c.lastID
	}
	c.wbuf.Reset()
	if err := encode(pk, &c.wbuf); err != nil {
		return err
	}
	_, err := c.conn.Write(c.wbuf.Bytes())
	c.lastWrite.Store(time.Now().UnixNano())
	return err
}

// publish sends one PUBLISH; payload may be reused once publish returns.
func (c *client) publish(topic string, qos byte, payload []byte) error {
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Publish, Qos: qos},
		ProtocolVersion: c.version,
		TopicName:       topic,
		Payload:         payload,
	}
	return c.write(&pk, (*packets.Packet).PublishEncode)
}

// subscribe sends one SUBSCRIBE and waits for its SUBACK; a refused filter is an *ackError. Call after start.
func (c *client) subscribe(ctx context.Context, filter string, qos byte, timeout time.Duration) error {
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, // [MQTT-3.8.1-1]
		ProtocolVersion: c.version,
		Filters:         packets.Subscriptions{{Filter: filter, Qos: qos}},
	}
	if err := c.write(&pk, (*packets.Packet).SubscribeEncode); err != nil {
		return fmt.Errorf("write subscribe: %w", err)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case codes := <-c.subacks:
		if len(codes) != 1 {
			return fmt.Errorf("suback with %d reason codes for 1 filter", len(codes))
		}
		if codes[0] >= 0x80 {
			return &ackError{version: c.version, kind: packets.Suback, code: codes[0]}
		}
		return nil
	case <-c.done:
		return fmt.Errorf("closed before suback: %w", c.err)
	case <-t.C:
		return errors.New("suback timeout")
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *client) ping() error {
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}, ProtocolVersion: c.version}
	return c.write(&pk, (*packets.Packet).PingreqEncode)
}

// disconnect sends DISCONNECT (normal, so no Will) and closes the connection.
func (c *client) disconnect() {
	c.closing.Store(true)
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}, ProtocolVersion: c.version}
	c.wmu.Lock()
	// Under the write lock: a websocket's deadline must not change during a write, and a stalled broker must
	// not hold up the teardown of thousands of clients.
	_ = c.conn.SetWriteDeadline(time.Now().Add(time.Second))
	_ = c.writeLocked(&pk, (*packets.Packet).DisconnectEncode)
	c.wmu.Unlock()
	c.close()
}

// close drops the connection without DISCONNECT; done closes once the reader has stopped.
func (c *client) close() {
	c.closing.Store(true)
	c.conn.Close()
	if !c.started.Load() {
		c.finish(errClosed)
	}
}

// dropped reports whether the connection ended without us asking, and why.
func (c *client) dropped() (bool, error) {
	select {
	case <-c.done:
		return c.err != errClosed, c.err
	default:
		return false, nil
	}
}

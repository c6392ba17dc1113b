package mochifix

import (
	"bufio"
	"net"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/idmq/idmq/internal/testkit/wire"
)

// recordingClose is a listener whose Close notes the callback it was handed.
type recordingClose struct {
	listeners.Listener
	got listeners.CloseFn
}

func (l *recordingClose) Close(fn listeners.CloseFn) {
	l.got = fn
	l.Listener.Close(fn)
}

// startListening serves a server with one wrapped TCP listener and returns its address.
func startListening(t *testing.T, wrap func(s *mqtt.Server, l listeners.Listener) listeners.Listener) (*mqtt.Server, string, *recordingClose) {
	t.Helper()
	s := mqtt.New(&mqtt.Options{Logger: quietLog()})
	if err := s.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec := &recordingClose{Listener: listeners.NewNet("tcp", ln)}
	if err := s.AddListener(wrap(s, rec)); err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = CloseServer(s) })
	return s, ln.Addr().String(), rec
}

// dialConnect opens a raw MQTT 3.1.1 connection to addr and sends CONNECT for id (a persistent session
// unless clean); the connection closes when the test ends.
func dialConnect(t *testing.T, addr, id string, clean bool) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := wire.WritePacket(c, &packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), ClientIdentifier: id, Keepalive: 60, Clean: clean}}); err != nil {
		t.Fatal(err)
	}
	return c
}

// readType reads one packet's type within d, or returns 0 and the read error.
func readType(c net.Conn, d time.Duration) (byte, error) {
	_ = c.SetReadDeadline(time.Now().Add(d))
	b, err := bufio.NewReader(c).ReadByte()
	if err != nil {
		return 0, err
	}
	return b >> 4, nil
}

// TestListenerCloseStopsClientsItself: at shutdown the wrapped listener hands its own client-stopping
// callback to the listener, never mochi's closeListenerClients (which can deadlock), and the clients end.
func TestListenerCloseStopsClientsItself(t *testing.T) {
	s, addr, rec := startListening(t, func(s *mqtt.Server, l listeners.Listener) listeners.Listener {
		return Listener(l, s, ListenerOptions{})
	})
	c := dialConnect(t, addr, "c1", true)
	if typ, err := readType(c, 5*time.Second); typ != packets.Connack {
		t.Fatalf("no CONNACK: %v", err)
	}
	mochiCalled := false
	s.Listeners.Close("tcp", func(string) { mochiCalled = true })
	if mochiCalled || rec.got == nil {
		t.Fatalf("mochi's callback called: %v, own callback handed over: %v", mochiCalled, rec.got != nil)
	}
	if _, err := readType(c, 5*time.Second); err == nil {
		t.Fatal("the client's connection is still open after the listener closed")
	}
}

// TestListenerConnectTimeout: a connection that sends nothing is closed after ConnectTimeout.
func TestListenerConnectTimeout(t *testing.T) {
	_, addr, _ := startListening(t, func(s *mqtt.Server, l listeners.Listener) listeners.Listener {
		return Listener(l, s, ListenerOptions{ConnectTimeout: 200 * time.Millisecond, Coalesce: true})
	})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if _, err := readType(c, 5*time.Second); err == nil || time.Since(start) > 4*time.Second {
		t.Fatalf("a silent connection was not closed by the broker in time: %v after %v", err, time.Since(start))
	}
	// A client that does send CONNECT is served (through the coalescing connection).
	if typ, err := readType(dialConnect(t, addr, "c2", true), 5*time.Second); typ != packets.Connack {
		t.Fatalf("no CONNACK: %v", err)
	}
}

// TestFixesListenerWaitsForStart: a listener from Fixes.Listener serves nobody until Start is done (the
// write-ahead log's replay comes first); the connection waits in the backlog and is served afterwards.
func TestFixesListenerWaitsForStart(t *testing.T) {
	var f *Fixes
	_, addr, _ := startListening(t, func(s *mqtt.Server, l listeners.Listener) listeners.Listener {
		var err error
		if f, err = Add(s, Options{}); err != nil {
			t.Fatal(err)
		}
		return f.Listener(l, ListenerOptions{})
	})
	c := dialConnect(t, addr, "c1", true)
	if typ, err := readType(c, 300*time.Millisecond); err == nil {
		t.Fatalf("packet type %d before Start", typ)
	}
	if err := f.Start(); err != nil {
		t.Fatal(err)
	}
	if typ, err := readType(c, 5*time.Second); typ != packets.Connack {
		t.Fatalf("no CONNACK after Start: %v", err)
	}
}

package mochifix_test

import (
	"bytes"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/idmq/idmq/internal/testkit"
	"github.com/idmq/idmq/mochifix"
)

// countingConn counts the writes that reach the network.
type countingConn struct {
	net.Conn
	mu     sync.Mutex
	writes int
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes++
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *countingConn) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes
}

// waitReceived waits up to 5 s for the client side to have received exactly want, failing at once when what
// it received is not the start of want.
func waitReceived(t *testing.T, got *testkit.LogBuffer, want []byte) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		b := []byte(got.String())
		if bytes.Equal(b, want) {
			return
		}
		if len(b) > len(want) || !bytes.HasPrefix(want, b) {
			t.Fatalf("client received % x, want % x", b, want)
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("client did not receive % x in time", want)
}

func newCoalescingPair(t *testing.T) (*mochifix.CoalescingConn, *countingConn, net.Conn, *testkit.LogBuffer) {
	t.Helper()
	server, client := net.Pipe()
	counted := &countingConn{Conn: server}
	c := mochifix.NewCoalescingConn(counted)
	got := &testkit.LogBuffer{}
	// The client side reads everything the broker writes.
	go func() { _, _ = io.Copy(got, client) }()
	t.Cleanup(func() { _ = c.Close(); _ = client.Close() })
	return c, counted, client, got
}

var (
	puback1  = []byte{0x40, 0x02, 0x00, 0x01}
	puback2  = []byte{0x40, 0x02, 0x00, 0x02}
	pubcomp3 = []byte{0x70, 0x02, 0x00, 0x03}
	publish  = []byte{0x30, 0x03, 0x00, 0x01, 'x'}
)

// readOnce makes the broker side take one chunk of input, as mochi's read loop does before handling it.
func readOnce(t *testing.T, c *mochifix.CoalescingConn, client net.Conn) {
	t.Helper()
	go func() { _, _ = client.Write([]byte{0xc0, 0x00}) }() // PINGREQ
	if _, err := io.ReadFull(c, make([]byte, 2)); err != nil {
		t.Fatal(err)
	}
}

// The PUBACKs for a batch of publishes reach the client in one write, when the read loop reads again.
func TestCoalescingConnSendsAcksOfOneBatchInOneWrite(t *testing.T) {
	c, counted, client, got := newCoalescingPair(t)
	readOnce(t, c, client)
	for _, ack := range [][]byte{puback1, puback2, pubcomp3} {
		if n, err := c.Write(ack); err != nil || n != len(ack) {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	if n := counted.count(); n != 0 {
		t.Fatalf("%d writes reached the network while the read loop had input in hand, want 0", n)
	}
	readOnce(t, c, client) // the next read flushes first
	waitReceived(t, got, bytes.Join([][]byte{puback1, puback2, pubcomp3}, nil))
	if n := counted.count(); n != 1 {
		t.Fatalf("%d writes for three acknowledgements, want 1", n)
	}
}

// A delivery is never held, and held acknowledgements go out before it, in order.
func TestCoalescingConnWritesDeliveriesAtOnceAfterHeldAcks(t *testing.T) {
	c, counted, client, got := newCoalescingPair(t)
	readOnce(t, c, client)
	if _, err := c.Write(puback1); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(publish); err != nil {
		t.Fatal(err)
	}
	waitReceived(t, got, append(bytes.Clone(puback1), publish...))
	if n := counted.count(); n != 1 {
		t.Fatalf("%d writes, want 1 (the held ack and the delivery together)", n)
	}
}

// Nothing is held while the read loop waits for the client: an acknowledgement written then (by another
// goroutine) goes out at once, or the read would wait forever for an answer the client never gets.
func TestCoalescingConnHoldsNothingWhileReadBlocks(t *testing.T) {
	c, _, client, got := newCoalescingPair(t)
	readOnce(t, c, client)
	readDone := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 2)) // blocks: the client sends nothing
		readDone <- err
	}()
	// Wait until the read is parked, then write from this goroutine.
	time.Sleep(20 * time.Millisecond)
	if _, err := c.Write(puback1); err != nil {
		t.Fatal(err)
	}
	waitReceived(t, got, puback1)
	select {
	case err := <-readDone:
		t.Fatalf("read returned early: %v", err)
	default:
	}
}

// Close sends what is held before it closes.
func TestCoalescingConnCloseFlushesHeldAcks(t *testing.T) {
	c, _, client, got := newCoalescingPair(t)
	readOnce(t, c, client)
	if _, err := c.Write(puback2); err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	waitReceived(t, got, puback2)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(puback1); err == nil {
		t.Fatal("Write after Close succeeded")
	}
}

// A write blocked on a client that stopped reading must not hold Close up: closing ends the write, as it does
// for an unwrapped connection. (mochi's shutdown, the admin API and credential expiry all close such clients.)
func TestCoalescingConnCloseDoesNotWaitForABlockedWrite(t *testing.T) {
	server, client := net.Pipe() // nobody reads client: a write blocks until the pipe closes
	defer client.Close()
	c := mochifix.NewCoalescingConn(server)
	writeDone := make(chan error, 1)
	go func() {
		_, err := c.Write(publish)
		writeDone <- err
	}()
	time.Sleep(20 * time.Millisecond) // let the write block
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	select {
	case <-closed:
	case <-time.After(3 * time.Second):
		t.Fatal("Close waited for a write blocked on a client that is not reading")
	}
	select {
	case err := <-writeDone:
		if err == nil {
			t.Fatal("the blocked write succeeded after Close")
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the blocked write did not end with Close")
	}
}

// Many writers and one reader: every byte arrives, each writer's packets in its own order.
func TestCoalescingConnConcurrentWritersLoseNothing(t *testing.T) {
	c, _, client, got := newCoalescingPair(t)
	const writers, perWriter = 4, 500
	stopReads := make(chan struct{})
	readsDone := make(chan struct{})
	go func() {
		defer close(readsDone)
		for {
			select {
			case <-stopReads:
				return
			default:
			}
			_, _ = client.Write([]byte{0xc0, 0x00})
		}
	}()
	go func() {
		b := make([]byte, 1)
		for {
			if _, err := c.Read(b); err != nil {
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perWriter; i++ {
				pk := []byte{0x40, 0x02, byte(w), byte(i % 256)}
				if i%7 == 0 {
					pk = []byte{0x30, 0x02, byte(w), byte(i % 256)} // a delivery now and then
				}
				if _, err := c.Write(pk); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stopReads)
	_ = client.SetWriteDeadline(time.Now())
	<-readsDone
	_ = c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		data := []byte(got.String())
		n := len(data)
		if n >= writers*perWriter*4 || time.Now().After(deadline) {
			if n != writers*perWriter*4 {
				t.Fatalf("client received %d bytes, want %d", n, writers*perWriter*4)
			}
			next := make([]int, writers)
			for off := 0; off < len(data); off += 4 {
				w, i := int(data[off+2]), int(data[off+3])
				if i != next[w]%256 {
					t.Fatalf("writer %d: packet %d arrived where %d was due", w, i, next[w]%256)
				}
				next[w]++
			}
			return
		}
		time.Sleep(time.Millisecond)
	}
}

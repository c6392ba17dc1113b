package wsconn

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// pair returns a Conn on the client side of a real WebSocket and the raw server side.
func pair(t *testing.T) (*Conn, *websocket.Conn) {
	t.Helper()
	server := make(chan *websocket.Conn, 1)
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			t.Error(err)
			return
		}
		server <- ws
	}))
	t.Cleanup(srv.Close)
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	c := New(ws)
	t.Cleanup(func() { c.Close() })
	s := <-server
	t.Cleanup(func() { s.Close() })
	return c, s
}

func TestReadSpansMessages(t *testing.T) {
	c, s := pair(t)
	// One packet split over two messages, then two packets in one message [MQTT-6.0.0-2].
	for _, m := range [][]byte{{0x30, 0x03}, {0x00, 0x01, 'a'}, {0xc0, 0x00, 0xd0, 0x00}} {
		if err := s.WriteMessage(websocket.BinaryMessage, m); err != nil {
			t.Fatal(err)
		}
	}
	got := make([]byte, 9)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if want := []byte{0x30, 0x03, 0x00, 0x01, 'a', 0xc0, 0x00, 0xd0, 0x00}; !bytes.Equal(got, want) {
		t.Fatalf("read % x, want % x", got, want)
	}
}

func TestReadRefusesTextFrames(t *testing.T) {
	c, s := pair(t)
	if err := s.WriteMessage(websocket.TextMessage, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 16)); !errors.Is(err, ErrTextFrame) {
		t.Fatalf("read of a text frame: %v, want %v", err, ErrTextFrame)
	}
}

func TestConcurrentWritesStayWhole(t *testing.T) {
	c, s := pair(t)
	const writers = 8
	var wg sync.WaitGroup
	stop := make(chan struct{})
	defer close(stop)
	go func() { // mochi moves the deadline from its reading goroutine while another writes
		for {
			select {
			case <-stop:
				return
			default:
				_ = c.SetDeadline(time.Now().Add(time.Minute))
			}
		}
	}()
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Write(bytes.Repeat([]byte{byte(i)}, 4096)); err != nil {
				t.Error(err)
			}
		}()
	}
	for range writers {
		op, m, err := s.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if op != websocket.BinaryMessage || len(m) != 4096 || !bytes.Equal(m, bytes.Repeat(m[:1], 4096)) {
			t.Fatalf("message of type %d, %d bytes, mixed: a write was interleaved with another", op, len(m))
		}
	}
	wg.Wait()
}

func TestDeadlinesHold(t *testing.T) {
	c, _ := pair(t)
	if err := c.SetDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte{0xc0, 0x00}); err == nil {
		t.Fatal("write after the deadline succeeded")
	}
	if _, err := c.Read(make([]byte, 2)); err == nil {
		t.Fatal("read after the deadline succeeded")
	}
}

package testkit

import (
	"net"
	"sync"
	"testing"
)

// handedOut holds every port FreePort returned in this test binary.
var handedOut = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// FreePort returns a loopback port that was free a moment ago and that no earlier call returned, for a
// process that binds it itself. The kernel may offer one ephemeral port to two listens in a row, and two
// listeners of one broker then asked for the same address (seen: "listeners[1].address: address ... is
// already used by listeners[0].address").
func FreePort(t testing.TB) int {
	t.Helper()
	handedOut.Lock()
	defer handedOut.Unlock()
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if !handedOut.ports[port] {
			handedOut.ports[port] = true
			return port
		}
	}
	t.Fatal("FreePort: the kernel offered only ports already handed out, 100 times")
	return 0
}

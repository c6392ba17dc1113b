package testkit

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"testing"
)

// handedOut holds every port FreePort returned in this test binary.
var handedOut = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// FreePort returns a loopback port that was free a moment ago and that no earlier call returned, for a
// process that binds it itself. It comes from below the kernel's ephemeral range where there is one: a port
// from that range can be taken between this call and the bind by any socket's automatic port (an outgoing
// connection, an embedded NATS server's client listener on port 0), which made a cluster start with one
// route missing ("the JetStream cluster has 2 server(s)"). Within it, the kernel may also offer one port to
// two listens in a row (seen: "listeners[1].address: address ... is already used by listeners[0].address").
func FreePort(t testing.TB) int {
	t.Helper()
	handedOut.Lock()
	defer handedOut.Unlock()
	if low := ephemeralLow(); low > firstFixedPort+1000 {
		for range 200 {
			port := firstFixedPort + rand.IntN(low-firstFixedPort)
			if handedOut.ports[port] || !bindable(port) {
				continue
			}
			handedOut.ports[port] = true
			return port
		}
	}
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

// firstFixedPort: below it are well-known services' ports (and bench/'s 21900 block is above it, but the
// benchmarks do not run beside the tests).
const firstFixedPort = 10000

// ephemeralLow is the first port of the kernel's automatic range (Linux), 0 if unknown.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	var low, high int
	if _, err := fmt.Sscan(string(b), &low, &high); err != nil {
		return 0
	}
	return low
}

func bindable(port int) bool {
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

package testkit

import (
	"fmt"
	"net"
	"testing"
)

func TestFreePortNeverRepeatsAndIsBindable(t *testing.T) {
	seen := map[int]bool{}
	for range 200 {
		p := FreePort(t)
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
	}
	p := FreePort(t)
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
	if err != nil {
		t.Fatalf("the port FreePort returned cannot be bound: %v", err)
	}
	ln.Close()
}

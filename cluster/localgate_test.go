package cluster

import (
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
)

// TestLocalGate: shut waits for publishes in progress and holds new ones until open; a publish that never
// reached exit (its connection failed) is forgotten at the client's next publish or disconnect; shut gives up
// (gate open again) when one does not finish in time.
func TestLocalGate(t *testing.T) {
	s := mqtt.New(nil)
	a, b := s.NewClient(nil, "t", "a", false), s.NewClient(nil, "t", "b", false)
	var g localGate

	g.enter(a)
	g.enter(a) // a's first publish never reached exit
	if g.n.Load() != 1 {
		t.Fatalf("in progress = %d after a lost publish, want 1", g.n.Load())
	}
	if g.shut(50 * time.Millisecond) {
		t.Fatal("shut succeeded with a publish in progress")
	}
	done := make(chan bool)
	go func() { done <- g.shut(5 * time.Second) }()
	time.Sleep(50 * time.Millisecond)
	g.exit(a)
	if !<-done {
		t.Fatal("shut did not succeed once the publish finished")
	}
	entered := make(chan struct{})
	go func() { g.enter(b); close(entered) }()
	select {
	case <-entered:
		t.Fatal("a publish entered a shut gate")
	case <-time.After(100 * time.Millisecond):
	}
	g.open()
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("a held publish did not go on when the gate opened")
	}
	if !g.busy() {
		t.Fatal("not busy with b's publish in progress")
	}
	g.exit(b)
	g.exit(b) // exit without a publish in progress (mochi calls OnPublished for refused QoS 0) is harmless
	if g.busy() {
		t.Fatalf("busy = %d after every publish finished", g.n.Load())
	}
	g.enter(a)
	g.forget(a) // a disconnected with its publish never delivered
	if g.busy() {
		t.Fatalf("busy = %d after the publisher's disconnect", g.n.Load())
	}
}

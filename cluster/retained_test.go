package cluster

import (
	"testing"
	"time"
)

// TestRoutedRetainKeepsFlagNotStore: a retained publish on A reaches B's subscribers with its retain flag (for
// Retain As Published), while B's retained store keeps the bucket's value even when the stream delivers an
// older retained message after the bucket moved on.
func TestRoutedRetainKeepsFlagNotStore(t *testing.T) {
	nodes, _ := startCluster(t, 2)
	sA, _ := mochiNode(t, nodes[0])
	sB, hB := mochiNode(t, nodes[1])
	var atB inbox
	atB.subscribe(t, sB, "r/#", 1)
	if err := sA.Publish("r/x", []byte("v1"), true, 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "delivery on B", func() bool { return len(atB.all()) > 0 })
	if got := atB.all()[0]; !got.FixedHeader.Retain || string(got.Payload) != "v1" {
		t.Fatalf("B's subscriber got %q retain=%v; want v1 retained", got.Payload, got.FixedHeader.Retain)
	}
	stored := func() string {
		for _, pk := range sB.Topics.Messages("r/x") {
			return string(pk.Payload)
		}
		return ""
	}
	eventually(t, 10*time.Second, "retained v1 on B", func() bool { return stored() == "v1" })
	if err := sA.Publish("r/x", []byte("v2"), true, 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "retained v2 on B", func() bool { return stored() == "v2" })
	// The stream's copy of v1 arriving late (after the bucket's v2) must not replace v2.
	hB.deliver(Delivery{Message: Message{Topic: "r/x", Payload: []byte("v1"), QoS: 1, Retain: true, Origin: "n0",
		ClientID: "late", Created: time.Now()}})
	if got := stored(); got != "v2" {
		t.Fatalf("B's retained store = %q after a late routed copy; want the bucket's v2", got)
	}
}
